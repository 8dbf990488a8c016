"""What the app serves with: the diffusers pipeline (engine.py) or the emulated accelerator (emulated/).

Torch-free: the app loads either (app.load_engine) and imports torch only for the diffusers one.
"""

from __future__ import annotations

import logging
import time
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


def warm_up(engine: ServingEngine, default: BatchKey, largest: BatchKey, images: int) -> float:
    """Run the largest call a request can make (`images` at `largest`, guidance on), so that the peak
    memory covers it before the pod is Ready, then the same number at `default` (unless that is the same
    call); return one full call at `default`, in seconds, scaled up from the warm-up steps.

    Raises ModelLoadError when the largest call runs out of memory: better a pod that fails to start
    with what to change than one that fails under its first large batch.
    """
    specs = [ImageSpec("warm-up", None, seed) for seed in range(images)]
    steps = min(default.steps, WARM_UP_STEPS)
    peak = replace(largest, steps=steps, guidance_scale=max(largest.guidance_scale, CFG_GUIDANCE))
    timed = replace(default, steps=steps)
    started = time.monotonic()
    try:
        engine.generate(peak, specs)
    except OutOfMemory as error:
        raise ModelLoadError(
            f"the largest call this server allows, {images} image(s) of {largest.width}x{largest.height} "
            f"(max_batch_size x max_width x max_height), does not fit: {error.message}; lower max_batch_size or "
            "max_width/max_height, or use an accelerator with more memory"
        ) from None
    seconds = time.monotonic() - started
    reading = engine.memory()
    logger.info(
        "warm-up: the largest call, %d image(s) at %dx%d, %d steps, guidance %g, ran in %.2f s; peak memory %s (%s)",
        images, peak.width, peak.height, peak.steps, peak.guidance_scale, seconds,
        "unknown" if reading.peak is None else f"{reading.peak / MIB:.0f} MiB", reading.source,
    )
    if timed != peak:
        started = time.monotonic()
        engine.generate(timed, specs)
        seconds = time.monotonic() - started
    return seconds * default.steps / steps
