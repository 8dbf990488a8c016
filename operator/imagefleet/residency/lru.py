"""Where a pool pod's checkpoints and adapters are: an LRU model of GPU, host RAM and disk.

A checkpoint (its denoiser and any other component that differs within the family) is in exactly
one place: on the GPU, in host RAM, or only on disk (the model cache). The GPU set holds the most
recently used checkpoints within `gpu_budget_mib`; a checkpoint pushed off the GPU goes to host RAM
when it fits `host_budget_mib` (pushing the least recently used ones there to disk), else it is
dropped (its copy on disk stays). Adapters (LoRA) are loaded into a checkpoint on the GPU: they
are kept by (checkpoint, adapter) in an LRU set of `adapter_slots`, and leave with their
checkpoint when it leaves the GPU.

`touch` is what a pipeline call does first: it makes the checkpoint and its adapters resident on
the GPU and says what moved, from where to where, in order (evictions before the loads they make
room for). Pure: no I/O, no clock; the caller prices the moves (pricing.py) and performs them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Place = Literal["gpu", "host", "disk"]
PLACES: tuple[Place, ...] = ("gpu", "host", "disk")


class CheckpointTooLarge(ValueError):
    """A checkpoint larger than the GPU budget: it can never be resident."""


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter by name, with the size of its weights."""

    name: str
    mib: float


@dataclass(frozen=True)
class Move:
    """One checkpoint or adapter moved between places (`adapter` names the adapter; None: the checkpoint)."""

    checkpoint: str
    adapter: str | None
    source: Place
    target: Place
    mib: float


@dataclass(frozen=True)
class Touch:
    """What making a checkpoint and its adapters resident on the GPU took."""

    checkpoint: str
    # Where the checkpoint was before: "gpu" is a checkpoint hit.
    source: Place
    # Every move, in the order it is done: evictions first, then the checkpoint, then its adapters.
    moves: tuple[Move, ...]

    @property
    def adapters_loaded(self) -> tuple[str, ...]:
        return tuple(m.adapter for m in self.moves if m.adapter is not None and m.target == "gpu")

    @property
    def hit(self) -> bool:
        """Nothing had to be loaded: the checkpoint and all its adapters were on the GPU."""
        return self.source == "gpu" and not self.adapters_loaded

    @property
    def evictions(self) -> tuple[Move, ...]:
        return tuple(m for m in self.moves if m.source == "gpu" or (m.source == "host" and m.target == "disk"))


@dataclass(frozen=True)
class Snapshot:
    """What is resident, most recently used first."""

    gpu: tuple[str, ...]
    host: tuple[str, ...]
    # (checkpoint, adapter) pairs loaded on the GPU.
    adapters: tuple[tuple[str, str], ...]
    gpu_budget_mib: float
    host_budget_mib: float


class Residency:
    """The LRU residency of one pod (see the module docstring). Not thread-safe: one caller at a time."""

    def __init__(self, *, gpu_budget_mib: float, host_budget_mib: float, adapter_slots: int) -> None:
        if gpu_budget_mib <= 0 or host_budget_mib < 0 or adapter_slots < 0:
            raise ValueError("gpu_budget_mib must be > 0, host_budget_mib and adapter_slots >= 0")
        self.gpu_budget_mib = gpu_budget_mib
        self.host_budget_mib = host_budget_mib
        self.adapter_slots = adapter_slots
        # name -> MiB, least recently used first.
        self._gpu: OrderedDict[str, float] = OrderedDict()
        self._host: OrderedDict[str, float] = OrderedDict()
        self._adapters: OrderedDict[tuple[str, str], float] = OrderedDict()

    def place(self, checkpoint: str) -> Place:
        if checkpoint in self._gpu:
            return "gpu"
        return "host" if checkpoint in self._host else "disk"

    def snapshot(self) -> Snapshot:
        return Snapshot(
            gpu=tuple(reversed(self._gpu)),
            host=tuple(reversed(self._host)),
            adapters=tuple(reversed(self._adapters)),
            gpu_budget_mib=self.gpu_budget_mib,
            host_budget_mib=self.host_budget_mib,
        )

    def check_fits(self, checkpoint: str, mib: float) -> None:
        """Raise CheckpointTooLarge naming both figures when `mib` exceeds the GPU budget."""
        if mib > self.gpu_budget_mib:
            raise CheckpointTooLarge(
                f"checkpoint {checkpoint!r} needs {mib:,.0f} MiB on the GPU, above the pod's GPU budget of "
                f"{self.gpu_budget_mib:,.0f} MiB; raise the budget (gpu-budget-mib) or use a smaller precision"
            )

    def touch(self, checkpoint: str, mib: float, adapters: Sequence[Adapter] = ()) -> Touch:
        """Make `checkpoint` (of `mib` MiB) and `adapters` resident on the GPU, most recently used."""
        self.check_fits(checkpoint, mib)
        if len(adapters) > self.adapter_slots:
            raise ValueError(
                f"{len(adapters)} adapters in one request, above the pod's {self.adapter_slots} adapter slots"
            )
        moves: list[Move] = []
        source = self.place(checkpoint)
        if source == "gpu":
            self._gpu.move_to_end(checkpoint)
        else:
            if source == "host":  # out of the host set first, so making room never drops it to disk
                del self._host[checkpoint]
            self._gpu_room(mib, moves)
            moves.append(Move(checkpoint, None, source, "gpu", mib))
            self._gpu[checkpoint] = mib
        for adapter in adapters:
            key = (checkpoint, adapter.name)
            if key in self._adapters:
                self._adapters.move_to_end(key)
                continue
            while len(self._adapters) >= self.adapter_slots:
                (owner, name), size = self._adapters.popitem(last=False)
                moves.append(Move(owner, name, "gpu", "disk", size))
            moves.append(Move(checkpoint, adapter.name, "disk", "gpu", adapter.mib))
            self._adapters[key] = adapter.mib
        return Touch(checkpoint, source, tuple(moves))

    def forget(self, checkpoint: str) -> tuple[Move, ...]:
        """Drop a checkpoint (and its adapters) from GPU and host RAM: its model was deleted."""
        moves = self._drop_adapters(checkpoint)
        for tier, place in ((self._gpu, "gpu"), (self._host, "host")):
            if checkpoint in tier:
                moves.append(Move(checkpoint, None, place, "disk", tier.pop(checkpoint)))  # type: ignore[arg-type]
        return tuple(moves)

    def _gpu_room(self, mib: float, moves: list[Move]) -> None:
        """Evict least recently used checkpoints from the GPU until `mib` fits."""
        while sum(self._gpu.values()) + mib > self.gpu_budget_mib:
            name, size = self._gpu.popitem(last=False)
            moves.extend(self._drop_adapters(name))
            if size <= self.host_budget_mib:
                while sum(self._host.values()) + size > self.host_budget_mib:
                    old, old_size = self._host.popitem(last=False)
                    moves.append(Move(old, None, "host", "disk", old_size))
                moves.append(Move(name, None, "gpu", "host", size))
                self._host[name] = size
            else:
                moves.append(Move(name, None, "gpu", "disk", size))

    def _drop_adapters(self, checkpoint: str) -> list[Move]:
        dropped = [key for key in self._adapters if key[0] == checkpoint]
        return [Move(owner, name, "gpu", "disk", self._adapters.pop((owner, name))) for owner, name in dropped]
