"""What the app serves with: the diffusers pipeline (engine.py) or the emulated accelerator (emulated/).

Torch-free: the app loads either (app.load_engine) and imports torch only for the diffusers one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from .batcher import BatchKey, Engine, ImageSpec
from .errors import ModelLoadError, OutOfMemory
from .memory import MIB, MemoryReading

logger = logging.getLogger(__name__)

# Steps of each warm-up call: the memory peak comes within one step and the decode, and the timed
# call is scaled up to the default steps.
WARM_UP_STEPS = 2
# Guidance of the largest call: above 1 turns classifier-free guidance on, which runs the denoiser on
# twice the batch (a request may ask for it even when the default is off).
CFG_GUIDANCE = 7.0


class ServingEngine(Engine, Protocol):
    """An engine the app can serve: sizes it accepts, a warm-up, and a line for the log."""

    native_size: int
    size_multiple: int
    summary: str
    output_formats: frozenset[str]

    def memory(self) -> MemoryReading:
        """What can be measured of the memory in use now (called from the event loop at scrape time)."""
        ...

    def encode(self, image: object, output_format: str) -> bytes:
        """One of this engine's images as bytes in `output_format` (one of `output_formats`)."""
        ...


def warm_up_plan(
    default: BatchKey, largest: BatchKey, images: int, buckets: Sequence[tuple[int, int]] = ()
) -> list[tuple[BatchKey, int]]:
    """The warm-up's calls, (key, images) at WARM_UP_STEPS: first the largest call a request can make
    (guidance on), last the timed call at `default`.

    With compiled `buckets` (largest first), each bucket runs at `images` and at 1 image, guidance on
    and off: the denoiser then sees its batch dimension at 2 x images, 2 and 1 (guidance on doubles it),
    so torch marks it dynamic after the second call (a batch of 2 to 2 x images reuses that graph) and
    compiles batch 1 apart (torch specialises sizes 0 and 1). No request pays a compilation, and a
    bucket costs three short calls, not one per batch size. The timed call runs last, compiled.
    """
    steps = min(default.steps, WARM_UP_STEPS)
    guided = max(largest.guidance_scale, CFG_GUIDANCE)
    timed = (replace(default, steps=steps), images)
    if not buckets:
        peak = (replace(largest, steps=steps, guidance_scale=guided), images)
        return [peak] if timed == peak else [peak, timed]
    calls: list[tuple[BatchKey, int]] = []
    for width, height in buckets:
        key = replace(default, width=width, height=height, steps=steps)
        for call in ((replace(key, guidance_scale=guided), images), (replace(key, guidance_scale=guided), 1),
                     (replace(key, guidance_scale=1.0), 1)):
            if call not in calls:
                calls.append(call)
    return [*calls, timed]


def warm_up(
    engine: ServingEngine, default: BatchKey, largest: BatchKey, images: int, buckets: Sequence[tuple[int, int]] = ()
) -> float:
    """Run warm_up_plan's calls, so that the peak memory covers the largest call a request can make (and,
    with compiled `buckets`, every graph is compiled) before the pod is Ready; return one full call at
    `default`, in seconds, scaled up from the warm-up steps.

    Raises ModelLoadError when a call at `images` runs out of memory: better a pod that fails to start
    with what to change than one that fails under its first large batch.
    """
    plan = warm_up_plan(default, largest, images, buckets)
    specs = [ImageSpec("warm-up", None, seed) for seed in range(images)]
    seconds = 0.0
    for index, (key, count) in enumerate(plan):
        started = time.monotonic()
        try:
            engine.generate(key, specs[:count])
        except OutOfMemory as error:
            sizes = "compile_sizes" if buckets else "max_width/max_height"
            raise ModelLoadError(
                f"the largest call this server allows, {count} image(s) of {key.width}x{key.height} "
                f"(max_batch_size at {sizes}), does not fit: {error.message}; lower max_batch_size or "
                f"{sizes}, or use an accelerator with more memory"
            ) from None
        seconds = time.monotonic() - started
        if index == 0:
            reading = engine.memory()
            logger.info(
                "warm-up: the largest call, %d image(s) at %dx%d, %d steps, guidance %g, ran in %.2f s; "
                "peak memory %s (%s)",
                count, key.width, key.height, key.steps, key.guidance_scale, seconds,
                "unknown" if reading.peak is None else f"{reading.peak / MIB:.0f} MiB", reading.source,
            )
        elif buckets:
            logger.info("warm-up (compiled sizes): %d image(s) at %dx%d, guidance %g, ran in %.2f s",
                        count, key.width, key.height, key.guidance_scale, seconds)
    return seconds * default.steps / plan[-1][0].steps
