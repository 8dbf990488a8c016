"""Pool mode's shared part (torch-free): the pod's residency, guarded for the scrape and /v1/load readers.

Both engines (emulated/engine.py and pool_engine.py) keep one; the batcher calls their `prepare`
in the pipeline thread, and the event loop reads `snapshot` for /v1/load.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from imagefleet.residency import Adapter, CheckpointTooLarge, Place, Residency, Snapshot, Touch

from .batcher import BatchKey
from .errors import CheckpointRefused
from .settings import Settings


class PoolState:
    """A Residency behind a lock, with the pool's base checkpoint name."""

    def __init__(self, settings: Settings) -> None:
        assert settings.gpu_budget_mib is not None and settings.host_budget_mib is not None  # settings check it
        self.base = settings.model
        self._residency = Residency(
            gpu_budget_mib=settings.gpu_budget_mib,
            host_budget_mib=settings.host_budget_mib,
            adapter_slots=settings.adapter_slots,
        )
        self._lock = threading.Lock()

    def name(self, key: BatchKey) -> str:
        """The checkpoint a key runs on, by the name residency knows it."""
        return self.base if key.checkpoint is None else key.checkpoint.key

    def place(self, name: str) -> Place:
        with self._lock:
            return self._residency.place(name)

    def touch(self, name: str, mib: float, adapters: Sequence[Adapter] = ()) -> Touch:
        """Residency.touch; a checkpoint over the GPU budget is a CheckpointRefused naming both figures."""
        with self._lock:
            try:
                return self._residency.touch(name, mib, adapters)
            except CheckpointTooLarge as error:
                raise CheckpointRefused(str(error), param="checkpoint") from None

    def drop_adapter(self, checkpoint: str, adapter: str) -> None:
        """An adapter that failed to load is not resident."""
        with self._lock:
            self._residency.drop_adapter(checkpoint, adapter)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._residency.snapshot()
