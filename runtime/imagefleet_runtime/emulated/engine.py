"""The emulated engine's I/O: it sleeps in the pipeline thread for as long as the real card would
compute (that sleep is the emulated kernel time), then returns flat-colour images (encoded by the app's encoder, off this thread).

In pool mode (EmulatedPoolEngine) it keeps the pod's residency like the real one and, before a call,
sleeps the priced time of the moves it needs (imagefleet.residency: host-to-GPU and disk bandwidth
of the GPU class, a LoRA's bytes and load work), divided by the speedup."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from imagefleet.catalog import emulation_table
from imagefleet.cost import Plan, builtin_plan, call_seconds, load_seconds
from imagefleet.residency import Adapter, Snapshot, checkpoint_mib, move_seconds, swap_cost

from ..batcher import BatchKey, ImageSpec, Prepared
from ..encoding import encode_pil, pillow_formats
from ..errors import AdapterRefused, OutOfMemory
from ..memory import MemoryReading, process_memory
from ..pool import PoolState
from ..settings import Settings
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
        return [FlatImage(key.width, key.height, _colour(key, image)) for image in images]


class EmulatedPoolEngine(EmulatedEngine):
    """A pool pod's emulated engine: residency as the real one keeps it, moves priced from the catalog."""

    def __init__(self, plan: Plan, speedup: float, settings: Settings) -> None:
        super().__init__(plan, speedup)
        self.pool = PoolState(settings)
        self.cost = swap_cost(plan.gpu_class.name)
        self.checkpoint_mib = checkpoint_mib(plan.model, plan.precision)
        self.adapter_mib = emulation_table().models[plan.model.name].adapter_mib
        self.pool.touch(self.pool.base, self.checkpoint_mib)  # loaded with the pod (load_emulated's wait)
        self.summary += f", pool of {plan.model.name}"

    def resident(self) -> Snapshot:
        return self.pool.snapshot()

    def prepare(self, key: BatchKey) -> Prepared:
        if key.adapters and self.adapter_mib is None:
            raise AdapterRefused(
                f"adapter {key.adapters[0].name!r}: the emulated engine has no adapter size for {self.plan.model.name} "
                "(emulation.yaml adapterMiB)", param="adapters",
            )
        adapters = [Adapter(a.key, self.adapter_mib or 0.0) for a in key.adapters]
        touch = self.pool.touch(self.pool.name(key), self.checkpoint_mib, adapters)
        seconds = tuple(move_seconds(self.cost, move) / self.speedup for move in touch.moves)
        time.sleep(sum(seconds))
        return Prepared(touch, seconds, self.pool.snapshot())


def _colour(key: BatchKey, image: ImageSpec) -> tuple[int, int, int]:
    """A colour from the seed, prompts, checkpoint and adapters: the same request gives the same image."""
    text = f"{image.seed}\0{image.prompt}\0{image.negative_prompt or ''}"
    if key.checkpoint is not None or key.adapters:
        model = "" if key.checkpoint is None else key.checkpoint.key
        text += f"\0{model}\0" + ",".join(f"{a.key}:{a.scale:g}" for a in key.adapters)
    red, green, blue = hashlib.blake2b(text.encode(), digest_size=3).digest()
    return red, green, blue


def load_emulated(settings: Settings) -> EmulatedEngine:
    """Resolve the figures, then wait as long as reading the weights would take."""
    assert settings.gpu_class is not None  # settings refuse engine=emulated without one
    plan = builtin_plan(model=settings.model, gpu_class=settings.gpu_class, precision=settings.precision)
    time.sleep(load_seconds(plan) / settings.emulation_speedup)
    if settings.pool:
        return EmulatedPoolEngine(plan, settings.emulation_speedup, settings)
    return EmulatedEngine(plan, settings.emulation_speedup)
