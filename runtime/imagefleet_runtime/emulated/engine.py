"""The emulated engine's I/O: it sleeps in the pipeline thread for as long as the real card would
compute (that sleep is the emulated kernel time), then returns flat-colour images (encoded by the app's encoder, off this thread)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from ..batcher import BatchKey, ImageSpec
from ..encoding import encode_pil, pillow_formats
from ..errors import OutOfMemory
from ..memory import MemoryReading, process_memory
from ..settings import Settings
from imagefleet.cost import Plan, builtin_plan, call_seconds, load_seconds
from .png import FlatImage, flat_png


class EmulatedEngine:
    """Stands in for PipelineEngine; only ever called from the batcher's one thread."""

    def __init__(self, plan: Plan, speedup: float) -> None:
        self.plan = plan
        self.speedup = speedup
        self.native_size = plan.native_size
        self.size_multiple = plan.size_multiple
        self.summary = f"an emulated {plan.gpu_class.name} at {plan.precision} (speedup {speedup:g})"
        self.output_formats = pillow_formats()

    def memory(self) -> MemoryReading:
        """The emulated card's memory cannot be measured: the process's resident memory, labelled so."""
        return process_memory()

    def encode(self, image: object, output_format: str) -> bytes:
        """PNG with the cheap writer; JPEG and WebP through Pillow."""
        assert isinstance(image, FlatImage)
        if output_format == "png":
            return flat_png(image.width, image.height, image.colour)
        return encode_pil(image.to_pil(), output_format)

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
        if not self.plan.fits(len(images), key.width, key.height):
            raise OutOfMemory(
                f"{len(images)} image(s) of {key.width}x{key.height} do not fit in the memory of the emulated "
                f"{self.plan.gpu_class.name} (by the operator's FitsGPU estimate)"
            )
        seconds = call_seconds(self.plan, width=key.width, height=key.height, steps=key.steps, images=len(images))
        time.sleep(seconds / self.speedup)
        return [FlatImage(key.width, key.height, _colour(image)) for image in images]


def _colour(image: ImageSpec) -> tuple[int, int, int]:
    """A colour from the seed and prompts: the same request gives the same image."""
    text = f"{image.seed}\0{image.prompt}\0{image.negative_prompt or ''}".encode()
    red, green, blue = hashlib.blake2b(text, digest_size=3).digest()
    return red, green, blue


def load_emulated(settings: Settings) -> EmulatedEngine:
    """Resolve the figures, then wait as long as reading the weights would take."""
    assert settings.gpu_class is not None  # settings refuse engine=emulated without one
    plan = builtin_plan(model=settings.model, gpu_class=settings.gpu_class, precision=settings.precision)
    time.sleep(load_seconds(plan) / settings.emulation_speedup)
    return EmulatedEngine(plan, settings.emulation_speedup)
