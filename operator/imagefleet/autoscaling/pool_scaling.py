"""Decide an ImageModelPool's replicas from its members' demand. Pure: no I/O, no clock.

The inputs come from the autoscaler's shared round (no query of its own): each member's gateway demand
(arrivals, queued requests) from the gateway's per-resource series, and the pool pods' own batch time. A
request is priced in GPU-seconds (the pods' observed seconds per image, else the catalog's cost model at the
family's defaults), the model mix adds the swap seconds it causes (`mix_swap_load`: each swap priced by the
residency model itself, `residency.swap_seconds` of the moves it makes from host RAM or from disk, eviction
included, as the replay charges them), and `pool.sizing.pool_replicas` turns that into pods. The pool
reaches zero only as a whole: any member with demand, queued requests or fresh gateway demand (its
imagefleet.io/demand-at) keeps or wakes one pod. Scaling down takes the highest recommendation of the
stabilization window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..crd.models import ImageModelPoolSpec
from ..pool.sizing import MemberDemand, PoolSize, pool_replicas, swap_load
from ..residency import Residency, SwapCost, swap_seconds

SCALED_POOL = "ScaledPool"
POOL_WOKEN = "PoolWoken"
POOL_SCALED_TO_ZERO = "PoolScaledToZero"


@dataclass(frozen=True)
class MemberSignal:
    """One member's demand as the round read it."""

    name: str
    arrival_rate: float  # requests per second at the gateway
    queued: float  # requests the gateway holds for it
    target_p95_seconds: float  # from its tier
    # Seconds since the gateway last wrote imagefleet.io/demand-at on it (None: never).
    demand_age_seconds: float | None = None


@dataclass(frozen=True)
class MixSwapPrices:
    """Seconds one checkpoint swap onto a full GPU takes on the pool's card, by where the checkpoint was, with
    the eviction that makes room for it: what sizing charges the mix (the router's `pool.routing.SwapPrices`
    price one move alone and charge what it pushes out apart)."""

    from_host: float  # host RAM -> GPU
    from_disk: float  # model cache -> host RAM -> GPU


def mix_swap_prices(cost: SwapCost, checkpoint_mib: float, keeps_host: bool) -> MixSwapPrices:
    """What the residency model charges (`residency.swap_seconds`, as the replay does) for a swap on a pod
    whose GPU is full: from host RAM, and from disk; `keeps_host`: whether its host budget holds a checkpoint
    (else nothing waits there, and an evicted checkpoint drops to disk)."""
    pod = Residency(gpu_budget_mib=checkpoint_mib, host_budget_mib=checkpoint_mib if keeps_host else 0.0,
                    adapter_slots=1)
    pod.touch("a", checkpoint_mib)
    pod.touch("b", checkpoint_mib)  # a waits in host RAM (with a host budget)
    from_host = swap_seconds(cost, pod.touch("a", checkpoint_mib)) if keeps_host else None
    from_disk = swap_seconds(cost, pod.touch("c", checkpoint_mib))
    return MixSwapPrices(from_disk if from_host is None else from_host, from_disk)


@dataclass(frozen=True)
class PoolInputs:
    spec: ImageModelPoolSpec
    replicas: int  # the pool Deployment's spec.replicas
    ready: int
    members: Sequence[MemberSignal]
    service_seconds: float  # GPU-seconds one request takes on the pool's pods
    swap: MixSwapPrices
    resident_per_pod: int  # checkpoints one pod keeps on its GPU (its budget over one checkpoint)
    host_per_pod: int  # checkpoints one pod keeps in host RAM (its host budget over one checkpoint)
    window_seconds: float  # how fresh a demand-at must be to count
    # Checkpoints the members asked for lately (`pool.sizing.working_set`): the pods they need stay.
    working_set: int = 0


@dataclass(frozen=True)
class PoolDecision:
    desired: int
    size: PoolSize
    active_members: int
    reason: str
    message: str
    # (time, recommendation) within the scale-down stabilization window.
    history: tuple[tuple[float, int], ...]


def _demand(member: MemberSignal, service_seconds: float, window_seconds: float) -> MemberDemand:
    woken = member.demand_age_seconds is not None and member.demand_age_seconds <= window_seconds
    return MemberDemand(member.name, member.arrival_rate, service_seconds, member.target_p95_seconds,
                        queued=max(member.queued, 1.0 if woken else 0.0))


def decide_pool(inputs: PoolInputs, history: Sequence[tuple[float, int]], now: float) -> PoolDecision:
    """The pool's replicas for this round (see the module docstring)."""
    scaling = inputs.spec.autoscaling
    demands = [_demand(member, inputs.service_seconds, inputs.window_seconds) for member in inputs.members]
    rates = {demand.name: demand.arrival_rate for demand in demands}
    pods = max(1, inputs.replicas)
    swaps = mix_swap_load(rates, pods * max(1, inputs.resident_per_pod), pods * inputs.host_per_pod, inputs.swap)
    size = pool_replicas(demands, swap_seconds=swaps, min_replicas=scaling.min_replicas,
                         max_replicas=scaling.max_replicas, ready=inputs.ready,
                         starting=max(0, inputs.replicas - inputs.ready), working_set=inputs.working_set,
                         resident_slots=inputs.resident_per_pod)
    recommended = size.replicas
    window = scaling.scale_down_stabilization_seconds
    kept = tuple((at, value) for at, value in history if now - at < window) + ((now, recommended),)
    desired = recommended if recommended >= inputs.replicas else max(value for _, value in kept)
    # The pool reaches zero only as a whole: an active member keeps one pod whatever the window says.
    active = sum(1 for demand in demands if demand.arrival_rate > 0 or demand.queued > 0)
    desired = max(desired, 1 if active else 0, scaling.min_replicas)
    desired = min(desired, scaling.max_replicas)
    work = f"{size.demand_gpu_seconds:.2f} GPU-s/s of demand from {active} of {len(demands)} members"
    swap = f" plus {size.swap_seconds:.2f} s/s of swaps" if size.swap_seconds > 0 else ""
    if size.residency_floor and size.residency_floor >= recommended:
        swap += (f"; {size.residency_floor} pod{'' if size.residency_floor == 1 else 's'} hold the "
                 f"{inputs.working_set} checkpoints asked for lately on their GPUs")
    if desired == inputs.replicas:
        reason, message = SCALED_POOL, f"pool stays at {desired}: {work}{swap}"
    elif inputs.replicas == 0:
        reason, message = POOL_WOKEN, f"pool woken to {desired} pod{'' if desired == 1 else 's'}: {work}{swap}"
    elif desired == 0:
        reason, message = POOL_SCALED_TO_ZERO, f"pool scaled to zero: no member had demand for {window} s"
    else:
        reason, message = SCALED_POOL, f"pool scaled from {inputs.replicas} to {desired}: {work}{swap}"
    return PoolDecision(desired, size, active, reason, message, kept)


def mix_swap_load(rates: Mapping[str, float], gpu_slots: int, host_slots: int,
                  prices: MixSwapPrices) -> float:
    """Swap seconds per second of the mix, where the residency model keeps its checkpoints: the busiest
    `gpu_slots` stay on the GPU, the next `host_slots` wait in host RAM (each request a swap from host), and
    the rest come from disk (each a swap from disk): `pool.sizing.swap_load` at each tier's price."""
    return (swap_load(rates, gpu_slots, prices.from_host)
            + swap_load(rates, gpu_slots + host_slots, prices.from_disk - prices.from_host))


def resident_per_pod(gpu_budget_mib: int, checkpoint_mib: float) -> int:
    """Checkpoints one pod keeps on its GPU within its budget (at least one)."""
    return max(1, math.floor(gpu_budget_mib / checkpoint_mib)) if checkpoint_mib > 0 else 1


def host_per_pod(host_budget_mib: int, checkpoint_mib: float) -> int:
    """Checkpoints one pod keeps in host RAM within its host budget (none without one)."""
    return math.floor(host_budget_mib / checkpoint_mib) if checkpoint_mib > 0 else 0
