"""Check a parsed request against the server's limits and turn it into work for the batcher."""

from __future__ import annotations

import secrets

from .batcher import AdapterRef, BatchKey, CheckpointRef, ImageSpec
from .errors import InvalidRequest, NotInPool
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
    if not settings.pool and (request.checkpoint is not None or request.adapters):
        field = "checkpoint" if request.checkpoint is not None else "adapters"
        raise NotInPool(
            f"{field}: this server serves one model ({settings.model!r}), not a pool; send it to a pool "
            "(imagefleet-runtime --pool-family)", param=field,
        )
    # A pool serves many models: the checkpoint and adapters say what runs, `model` is the gateway's name for it.
    if not settings.pool and request.model is not None and request.model != settings.model:
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
    checkpoint = None if request.checkpoint is None else CheckpointRef(request.checkpoint.name, request.checkpoint.revision)
    if checkpoint is not None and checkpoint.name == settings.model and checkpoint.revision is None:
        checkpoint = None  # the base, by its own name: one batch key for both
    adapters = tuple(AdapterRef(a.name, a.weight_name, a.scale) for a in request.adapters)
    if len({a.key for a in adapters}) < len(adapters):
        raise InvalidRequest("adapters: the same adapter is named twice", param="adapters")
    if len(adapters) > settings.adapter_slots:
        raise InvalidRequest(
            f"adapters: {len(adapters)} adapters, above this server's adapter_slots {settings.adapter_slots}",
            param="adapters",
        )
    return BatchKey(width, height, steps, guidance, checkpoint, adapters), images
