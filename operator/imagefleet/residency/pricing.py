"""What a residency move costs on a GPU class, priced from the catalog (emulation.yaml).

    host -> GPU   mib / hostToGpu            (and GPU -> host the same: the same PCIe link)
    disk -> host  mib / load bandwidth        (the model cache volume; emulation.yaml `load`)
    disk -> GPU   mib / load bandwidth + mib / hostToGpu
    GPU or host -> disk   0                   (the copy on disk stays; dropping is free)
    adapter load  its disk -> GPU move + the adapter's fixed load work (lora.loadSeconds)

A class whose device is the host (cpu) has no host-to-GPU copy: those moves cost 0 there.
Seconds are real-card seconds; the emulated engine divides them by its speedup.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagefleet.catalog import EmulationTable, ModelInfo, Precision, emulation_table
from imagefleet.fit import BYTES_PER_PARAMETER

from .lru import Move, Touch

# Components shared by every checkpoint of a family and loaded once per pod (the rest is what swaps).
SHARED_COMPONENTS = frozenset({"vae", "text_encoder", "text_encoder_2", "text_encoder_3"})


@dataclass(frozen=True)
class SwapCost:
    """The figures one GPU class's moves are priced with."""

    # None: the device is the host (no copy between them).
    host_to_gpu_mib_per_second: float | None
    disk_to_host_mib_per_second: float
    # Fixed work of loading one adapter into a resident denoiser (parsing, wrapping layers, set_adapters).
    adapter_load_seconds: float


def swap_cost(gpu_class: str, table: EmulationTable | None = None) -> SwapCost:
    """The catalog's figures for `gpu_class`; KeyError naming the known classes when it has none."""
    table = table or emulation_table()
    if gpu_class not in table.classes:
        raise KeyError(f"no swap figures for GPU class {gpu_class!r} (known: {', '.join(table.classes)})")
    return SwapCost(
        host_to_gpu_mib_per_second=table.classes[gpu_class].host_to_gpu_mib_per_second,
        disk_to_host_mib_per_second=table.load.bandwidth_mib_per_second,
        adapter_load_seconds=table.lora.load_seconds,
    )


def _link(cost: SwapCost, mib: float) -> float:
    rate = cost.host_to_gpu_mib_per_second
    return 0.0 if rate is None else mib / rate


def move_seconds(cost: SwapCost, move: Move) -> float:
    """Seconds one move takes (see the module docstring)."""
    seconds = 0.0
    if move.target == "disk":
        return seconds
    if move.source == "disk":
        seconds += move.mib / cost.disk_to_host_mib_per_second
    if "gpu" in (move.source, move.target) and move.source != move.target:
        seconds += _link(cost, move.mib)
    if move.adapter is not None and move.target == "gpu":
        seconds += cost.adapter_load_seconds
    return seconds


def swap_seconds(cost: SwapCost, touch: Touch) -> float:
    """Seconds a touch adds before its pipeline call: every move, one after the other."""
    return sum(move_seconds(cost, move) for move in touch.moves)


def checkpoint_mib(family: ModelInfo, precision: Precision) -> float:
    """MiB of what differs between checkpoints of a family (its denoiser) at a precision."""
    billions = sum(size for name, size in family.components.items() if name not in SHARED_COMPONENTS)
    return billions * 1e9 * BYTES_PER_PARAMETER[precision] / 2**20


def shared_mib(family: ModelInfo, precision: Precision) -> float:
    """MiB of the components loaded once per pod (VAE, text encoders)."""
    billions = sum(size for name, size in family.components.items() if name in SHARED_COMPONENTS)
    return billions * 1e9 * BYTES_PER_PARAMETER[precision] / 2**20
