"""The memory budgets of an ImageModelPool's pods: pure figures from the model and GPU class catalogs.

A checkpoint is one pipeline of the family (every component's weights at the pool's precision);
the GPU budget must hold one, the rest of the resident set lives within it, then in host RAM.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .catalog import GPUClass, ModelInfo, Precision, model_catalog
from .fit import RUNTIME_OVERHEAD_MIB, estimate, usable_mib

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?)?$")
_UNIT_BYTES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


@dataclass(frozen=True)
class Budgets:
    """Resident-set budgets of one pool pod, MiB."""

    gpu_mib: int
    host_mib: int


def checkpoint_mib(model: ModelInfo, precision: Precision) -> int:
    """Weights of one pipeline of `model` at `precision`, MiB."""
    defaults = model.defaults
    return sum(estimate(model, precision, 1, defaults.width, defaults.height).weights_mib.values())


def checkpoint_mib_by_family() -> dict[str, dict[str, int]]:
    """family -> precision -> checkpoint MiB, for every catalog model (the admission policy's table)."""
    return {name: {precision: checkpoint_mib(model, precision) for precision in ("fp16", "bf16", "fp32")}
            for name, model in model_catalog().items()}


def _memory_limit_mib(gpu_class: GPUClass) -> int | None:
    quantity = gpu_class.resources.get("limits", {}).get("memory")
    found = _QUANTITY.match(quantity or "")
    if found is None:
        return None
    return math.floor(float(found.group(1)) * _UNIT_BYTES[found.group(2) or ""] / 2**20)


def budgets(model: ModelInfo, precision: Precision, gpu_class: GPUClass,
            gpu_mib: int | None, host_mib: int | None) -> Budgets:
    """The budgets a pool pod runs with: those set, else the GPU class's usable memory less one batch's
    activations at the family's default size (GPU), and the container's memory limit less one checkpoint
    and the runtime's overhead (host; 0 without a limit)."""
    defaults = model.defaults
    if gpu_mib is None:
        one = estimate(model, precision, 1, defaults.width, defaults.height)
        gpu_mib = max(0, usable_mib(gpu_class) - one.activations_mib - one.overhead_mib)
    if host_mib is None:
        limit = _memory_limit_mib(gpu_class)
        host_mib = 0 if limit is None else max(0, limit - checkpoint_mib(model, precision) - RUNTIME_OVERHEAD_MIB)
    return Budgets(gpu_mib, host_mib)
