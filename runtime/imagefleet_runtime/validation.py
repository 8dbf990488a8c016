"""Check a parsed request against the server's limits and turn it into work for the batcher."""

from __future__ import annotations

import secrets

from .batcher import BatchKey, ImageSpec
from .errors import InvalidRequest
from .schemas import MAX_SEED, GenerationRequest
from .settings import Settings


def to_work(
    request: GenerationRequest,
    settings: Settings,
    defaults: BatchKey,
    largest: BatchKey,
    *,
    size_multiple: int,
    output_formats: frozenset[str],
    compiled_sizes: tuple[tuple[int, int], ...] = (),
) -> tuple[BatchKey, list[ImageSpec]]:
    """The batch key and one ImageSpec per image (at most `largest`'s size, and one of `compiled_sizes` when
    there are some); InvalidRequest names the field that is out of bounds."""
    if request.model is not None and request.model != settings.model:
        raise InvalidRequest(f"model: this server serves {settings.model!r}, not {request.model!r}", param="model")
    if request.output_format not in output_formats:
        raise InvalidRequest(
            f"output_format: this server cannot write {request.output_format}; it writes {', '.join(sorted(output_formats))}",
            param="output_format",
        )
    width, height = request.dimensions() or (defaults.width, defaults.height)
    for name, value, limit in (("width", width, largest.width), ("height", height, largest.height)):
        if not size_multiple <= value <= limit:
            raise InvalidRequest(
                f"size: {name} {value} is outside {size_multiple}..{limit} (size is WIDTHxHEIGHT)", param="size"
            )
        if value % size_multiple:
            raise InvalidRequest(f"size: {name} {value} is not a multiple of {size_multiple}", param="size")
    if compiled_sizes and (width, height) not in compiled_sizes:
        raise InvalidRequest(
            f"size: {width}x{height} is not one of the sizes this server compiled its model for "
            f"({', '.join(f'{w}x{h}' for w, h in compiled_sizes)}; compile_sizes)", param="size",
        )
    steps = defaults.steps if request.steps is None else request.steps
    if steps > settings.max_steps:
        raise InvalidRequest(f"steps: {steps} is above this server's max_steps {settings.max_steps}", param="steps")
    guidance = defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale
    seed = secrets.randbelow(2**32) if request.seed is None else request.seed
    if seed + request.n - 1 > MAX_SEED:
        raise InvalidRequest(f"seed: seed + n - 1 must be at most {MAX_SEED}", param="seed")
    images = [ImageSpec(request.prompt, request.negative_prompt, seed + index) for index in range(request.n)]
    return BatchKey(width, height, steps, guidance), images
