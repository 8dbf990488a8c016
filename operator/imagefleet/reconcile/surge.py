"""Whether a rollout that needs a surge pod can get a GPU for it. Pure.

A rollout with maxUnavailable resolving to 0 (e.g. a single replica with maxSurge 1, maxUnavailable 0,
or a percentage that rounds down to 0) never takes an old pod down before a new one is ready: it
needs a free GPU for each surge pod. Without one the new pod stays Pending and the rollout waits
(the old pods keep serving) until a GPU frees or the progress deadline passes; the operator says so.
"""

from __future__ import annotations

import math

from ..catalog import GPUClass
from ..crd.models import RolloutSpec

# The Event reason the plan posts.
ROLLOUT_BLOCKED = "RolloutBlocked"


def _resolve(value: int | str, replicas: int, *, round_up: bool) -> int:
    """An int-or-percentage against `replicas`, as the Deployment controller rounds it."""
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * replicas / 100
    return math.ceil(share) if round_up else math.floor(share)


def surge_gpus_needed(rollout: RolloutSpec, replicas: int, gpu_class: GPUClass) -> int:
    """GPUs the rollout must find free before its first step (0: it can take an old pod down instead)."""
    if replicas < 1 or gpu_class.gpu_resource is None:
        return 0
    surge = _resolve(rollout.max_surge, replicas, round_up=True)
    unavailable = _resolve(rollout.max_unavailable, replicas, round_up=False)
    if unavailable > 0 or surge == 0:  # both 0 after rounding: the controller allows one unavailable
        return 0
    return gpu_class.gpus_per_replica


def surge_blocked_message(rollout: RolloutSpec, replicas: int, gpu_class: GPUClass, free_gpus: int) -> str | None:
    """The RolloutBlocked message when the surge pod will find no GPU; None when it will (or needs none)."""
    needed = surge_gpus_needed(rollout, replicas, gpu_class)
    if needed == 0 or free_gpus >= needed:
        return None
    return (
        f"no free {gpu_class.name} GPU for the surge pod ({free_gpus} free, {needed} needed); the rollout waits "
        f"with the old pod{'s' if replicas > 1 else ''} serving until one frees (spec.rollout.maxSurge "
        f"{rollout.max_surge}, maxUnavailable {rollout.max_unavailable}); set spec.rollout.maxUnavailable to 1 "
        "to replace a pod in place instead"
    )
