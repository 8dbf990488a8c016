"""What the runtime serves with, and loading it: the diffusers pipeline or the emulated accelerator.

torch and diffusers are imported only when the diffusers engine is loaded.
"""

from __future__ import annotations

from typing import Protocol

from .batcher import BatchKey, Engine
from .settings import Settings

# Steps of the warm-up call, which also estimates a full call for Retry-After.
WARM_UP_STEPS = 2


class ServingEngine(Engine, Protocol):
    """An engine the app can serve: sizes it accepts, a warm-up, and a line for the log."""

    native_size: int
    size_multiple: int
    summary: str

    def warm_up(self, key: BatchKey) -> float:
        """Run one short generation and estimate one call at `key`, in seconds."""
        ...


def load_engine(settings: Settings) -> ServingEngine:
    """Load the model (blocking: run it in a thread); raises errors.ModelLoadError with what to change."""
    if settings.engine == "emulated":
        from .emulated.engine import load_emulated

        return load_emulated(settings)
    from .engine import PipelineEngine
    from .models.loader import load_pipeline

    pipeline, device = load_pipeline(settings)
    return PipelineEngine(pipeline, device)
