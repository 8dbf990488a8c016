"""Pool sizing: the replicas of a pool from the sum of its members' demand, priced in GPU-seconds.

A member's demand is its arrival rate times the GPU-seconds one of its requests takes on the
pool's card (`gateway.pricing.Pricing.work_seconds`, the catalog's cost model). On top comes the
swap time the model mix causes: pods that change checkpoint or adapter spend those seconds not
generating, so the swap seconds per second are work like any other.

- A member whose demand alone fills pods (at least one pod's worth of GPU-seconds per second)
  gets them: it is sized on its own by the queueing model, and those pods hold its checkpoint
  without swapping.
- The other members share the remaining pods: their requests and the swap seconds, at the mean
  service time a request takes there, sized by the same queueing model
  (`autoscaling.sizing.replicas_for`) at the strictest p95 target among them.
- The working set stays on the GPUs: while the pool is active it keeps at least the pods whose GPUs
  hold each checkpoint requested within `WORKING_SET_SECONDS` once (`residency_floor`). Demand alone
  sizes the pool by the last minute's arrivals, so the pool shrinks and grows with every lull and
  burst, and each pod removed takes its checkpoints with it while each pod added starts empty: the
  long tail's checkpoints, asked for a few times an hour, would come back by a swap each time.
- The pool scales to zero only as a whole: while any member has demand or queued work, it keeps
  at least one pod; `min_replicas` and `max_replicas` bound the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..autoscaling.sizing import replicas_for

# A member's demand fills a pod when it keeps one pod busy this share of the time or more.
FILLS_POD = 1.0
# The pool's working set: the checkpoints requested within this long (the callers count them). On the
# shipped trace's long tail (3 or 4 requests an hour for the least popular checkpoints) 30 minutes
# covers nearly every checkpoint; 20 minutes leaves some out (see docs/pools-replay.md).
WORKING_SET_SECONDS = 1800.0


@dataclass(frozen=True)
class MemberDemand:
    """One member of a pool, as the pool's autoscaler sees it."""

    name: str
    arrival_rate: float  # requests per second
    work_seconds: float  # GPU-seconds one request takes on the pool's card (the catalog's cost model)
    target_p95_seconds: float
    queued: float = 0.0  # requests waiting for it (at the gateway and the pods)

    @property
    def gpu_seconds_per_second(self) -> float:
        return self.arrival_rate * self.work_seconds


@dataclass(frozen=True)
class PoolSize:
    """The pool's replicas and how they came about."""

    replicas: int
    dedicated: Mapping[str, int]  # members whose demand alone fills pods, with their pods
    shared: int  # pods for the other members and the swaps
    demand_gpu_seconds: float  # members' GPU-seconds per second
    swap_seconds: float  # swap seconds per second, as given
    # Why the queueing model gave no figure (one request takes the whole target), else None.
    unsized: str | None = None
    # The pods the working set needs on the GPUs (`residency_floor`), 0 when not asked or inactive.
    residency_floor: int = 0


def swap_load(rates: Mapping[str, float], resident_slots: int, swap_seconds: float) -> float:
    """Swap seconds per second the mix causes when the pods together keep `resident_slots` checkpoints
    on the GPU: the busiest members stay resident, and each request of another one swaps once
    (`swap_seconds`: the residency model's price of bringing a checkpoint to the GPU)."""
    ranked = sorted((rate for rate in rates.values() if rate > 0), reverse=True)
    return sum(ranked[max(0, resident_slots):]) * swap_seconds


def pool_replicas(
    members: Sequence[MemberDemand],
    *,
    swap_seconds: float,
    min_replicas: int,
    max_replicas: int,
    ready: int = 0,
    starting: int = 0,
    startup_seconds: float = 60.0,
    working_set: int = 0,
    resident_slots: int = 1,
) -> PoolSize:
    """The pool's replicas for its members' demand plus `swap_seconds` (per second) of swapping.

    `ready` and `starting` are the pool's pods now, shared out by each part's share of the work, so
    a backlog drains as `replicas_for` drains it. `working_set` is how many distinct checkpoints the
    members asked for within `WORKING_SET_SECONDS`, `resident_slots` how many one pod keeps on its GPU.
    """
    demand = sum(m.gpu_seconds_per_second for m in members)
    total_work = demand + swap_seconds
    dedicated: dict[str, int] = {}
    shared_members: list[MemberDemand] = []
    left_ready, left_starting = ready, starting
    for member in sorted(members, key=lambda m: -m.gpu_seconds_per_second):
        if member.work_seconds > 0 and member.gpu_seconds_per_second >= FILLS_POD:
            # Its share of the pods now, by its share of the work (what drains its backlog).
            share = member.gpu_seconds_per_second / total_work
            own_ready, own_starting = math.floor(ready * share), math.floor(starting * share)
            pods = _sized(member.arrival_rate, member.work_seconds, member.queued, member.target_p95_seconds,
                          own_ready, own_starting, startup_seconds)
            if pods is not None:
                dedicated[member.name] = pods
                left_ready -= own_ready
                left_starting -= own_starting
                continue
        shared_members.append(member)
    shared, unsized = _shared(shared_members, swap_seconds, left_ready, left_starting, startup_seconds)
    total = sum(dedicated.values()) + shared
    active = any(m.arrival_rate > 0 or m.queued > 0 for m in members) or swap_seconds > 0
    resident = min(max_replicas, residency_floor(working_set, resident_slots)) if active else 0
    floor = max(min_replicas, 1 if active else 0, resident)
    return PoolSize(max(floor, min(max_replicas, total)), dedicated, shared, demand, swap_seconds, unsized, resident)


def _shared(members: Sequence[MemberDemand], swap_seconds: float, ready: int, starting: int,
            startup_seconds: float) -> tuple[int, str | None]:
    """Pods for the members that share, with the swaps: their requests at the mean time one takes,
    swaps included, at the strictest target among those with demand."""
    rate = sum(m.arrival_rate for m in members)
    queued = sum(m.queued for m in members)
    if rate <= 0:
        # Nothing arrives: the queue alone (and a pool that still swaps) keeps a pod.
        return (1 if queued > 0 or swap_seconds > 0 else 0), None
    work = sum(m.gpu_seconds_per_second for m in members) + swap_seconds
    service = work / rate
    asking = [m for m in members if m.arrival_rate > 0 or m.queued > 0]
    target = min(m.target_p95_seconds for m in asking)
    pods = _sized(rate, service, queued, target, ready, starting, startup_seconds)
    if pods is None:
        return math.ceil(work), (f"a request takes {service:.2f} GPU-seconds with swaps, at or above the "
                                 f"{target:g}s p95 target: sized by GPU-seconds alone")
    return pods, None


def _sized(rate: float, service: float, queued: float, target: float, ready: int, starting: int,
           startup_seconds: float) -> int | None:
    return replicas_for(arrival_rate=rate, batch_seconds=service, batch_size=1.0, queue=queued, ready=ready,
                        starting=starting, target_p95_seconds=target, startup_seconds=startup_seconds)


def residency_floor(working_set: int, resident_slots: int) -> int:
    """Pods whose GPUs hold each checkpoint of the working set once, at `resident_slots` checkpoints a pod."""
    return math.ceil(working_set / max(1, resident_slots)) if working_set > 0 else 0


def working_set(last_asked: Mapping[str, float], now: float) -> int:
    """How many checkpoints were asked for within `WORKING_SET_SECONDS` before `now` (`last_asked`: each
    checkpoint's latest request, in the caller's clock): what `pool_replicas` takes as `working_set`."""
    return sum(1 for at in last_asked.values() if now - at <= WORKING_SET_SECONDS)
