"""What the app serves with: the diffusers pipeline (engine.py) or the emulated accelerator (emulated/).

Torch-free: the app loads either (app.load_engine) and imports torch only for the diffusers one.
"""

from __future__ import annotations

from typing import Protocol

from .batcher import BatchKey, Engine
from .memory import MemoryReading

# Steps of the warm-up call, which also estimates a full call for Retry-After.
WARM_UP_STEPS = 2


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

    def warm_up(self, key: BatchKey) -> float:
        """Run one short generation and estimate one call at `key`, in seconds."""
        ...
