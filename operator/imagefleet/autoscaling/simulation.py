"""A discrete-event model of a runtime fleet, for replaying load traces through a policy.

Requests arrive as a Poisson process at the trace's rate (piecewise constant)
into one FIFO queue. Each ready replica takes up to `max_batch_size` waiting
requests and is busy for `batch_seconds + image_seconds * batch`. New replicas
become ready `startup_seconds` after they are asked for (scheduling, image pull,
model load) and hold a GPU from the start. Every `interval_seconds` the
autoscaler sees the queue length and the p95 of the requests completed within
the latency window, as Prometheus would.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .policy import Observation

Autoscaler = Callable[[Observation], int]


@dataclass(frozen=True)
class Fleet:
    batch_seconds: float = 0.5
    image_seconds: float = 1.0
    max_batch_size: int = 4
    startup_seconds: float = 60.0
    interval_seconds: float = 15.0
    latency_window_seconds: float = 60.0


@dataclass(frozen=True)
class Result:
    replica_minutes: float
    slo_violation_minutes: int
    scale_changes: int
    requests: int
    p95_seconds: float


@dataclass
class _Replica:
    started: float
    ready_at: float
    busy_until: float = 0.0
    leaving: bool = False
    batch: list[float] = field(default_factory=list)


def simulate(
    trace: Sequence[tuple[float, float]],
    autoscaler: Autoscaler,
    fleet: Fleet,
    *,
    initial_replicas: int,
    target_p95_seconds: float,
    seed: int = 0,
) -> Result:
    """Replay `trace` (time in s, arrivals per s; each rate holds until the next row)."""
    rng = random.Random(seed)
    end = trace[-1][0]
    events: list[tuple[float, int, str, _Replica | None]] = []
    order = 0

    def schedule(time: float, kind: str, replica: _Replica | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, kind, replica))

    for (start, rate), (stop, _) in zip(trace, trace[1:]):
        if rate <= 0:
            continue
        time = start + rng.expovariate(rate)
        while time < stop:
            schedule(time, "arrival")
            time += rng.expovariate(rate)
    evaluation = fleet.interval_seconds
    while evaluation < end:
        schedule(evaluation, "evaluate")
        evaluation += fleet.interval_seconds

    queue: deque[float] = deque()
    replicas = [_Replica(started=0.0, ready_at=0.0) for _ in range(initial_replicas)]
    replica_seconds = 0.0
    completed: deque[tuple[float, float]] = deque()  # (completion time, latency) in the window
    batches: deque[tuple[float, float, int]] = deque()  # (completion time, duration, size) in the window
    latencies_by_minute: dict[int, list[float]] = {}
    all_latencies: list[float] = []
    changes = 0

    def finish(time: float, replica: _Replica) -> None:
        size = len(replica.batch)
        batches.append((time, fleet.batch_seconds + fleet.image_seconds * size, size))
        for arrival in replica.batch:
            latency = time - arrival
            completed.append((time, latency))
            latencies_by_minute.setdefault(int(arrival // 60), []).append(latency)
            all_latencies.append(latency)
        replica.batch = []

    def dispatch(time: float) -> None:
        for replica in replicas:
            if not queue:
                return
            if replica.ready_at <= time and not replica.batch and not replica.leaving:
                size = min(fleet.max_batch_size, len(queue))
                replica.batch = [queue.popleft() for _ in range(size)]
                replica.busy_until = time + fleet.batch_seconds + fleet.image_seconds * size
                schedule(replica.busy_until, "done", replica)

    def retire(time: float, replica: _Replica) -> None:
        nonlocal replica_seconds
        replica_seconds += time - replica.started
        replicas.remove(replica)

    while events:
        time, _, kind, replica = heapq.heappop(events)
        if kind == "arrival":
            queue.append(time)
        elif kind == "done":
            assert replica is not None
            finish(time, replica)
            if replica.leaving:
                retire(time, replica)
        elif kind == "evaluate":
            while completed and completed[0][0] < time - fleet.latency_window_seconds:
                completed.popleft()
            while batches and batches[0][0] < time - fleet.latency_window_seconds:
                batches.popleft()
            calls = len(batches)
            active = [r for r in replicas if not r.leaving]
            observation = Observation(
                time=time,
                replicas=len(active),
                ready_replicas=sum(1 for r in active if r.ready_at <= time),
                queue_depth=float(len(queue)),
                p95_seconds=_p95([latency for _, latency in completed]),
                busy_replicas=sum(duration for _, duration, _ in batches) / fleet.latency_window_seconds,
                arrival_rate=len(completed) / min(time, fleet.latency_window_seconds),
                batch_seconds=sum(d for _, d, _ in batches) / calls if calls else None,
                batch_size=sum(n for _, _, n in batches) / calls if calls else None,
            )
            desired = autoscaler(observation)
            if desired != len(active):
                changes += 1
            for _ in range(desired - len(active)):
                replicas.append(_Replica(started=time, ready_at=time + fleet.startup_seconds))
            # Scale down: starting pods first, then idle ones, then busy ones after their batch.
            for victim in sorted(active, key=lambda r: (r.ready_at <= time, bool(r.batch)))[
                : max(0, len(active) - desired)
            ]:
                victim.leaving = True
                if not victim.batch:
                    retire(time, victim)
        dispatch(time)

    for replica in list(replicas):
        retire(max(end, replica.busy_until if replica.batch else end), replica)
    for arrival in queue:  # never served: count them as waiting until the end
        latencies_by_minute.setdefault(int(arrival // 60), []).append(end - arrival)
        all_latencies.append(end - arrival)
    violations = sum(
        1 for values in latencies_by_minute.values() if (_p95(values) or 0.0) > target_p95_seconds
    )
    return Result(
        replica_minutes=replica_seconds / 60.0,
        slo_violation_minutes=violations,
        scale_changes=changes,
        requests=len(all_latencies),
        p95_seconds=_p95(all_latencies) or 0.0,
    )


def _p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
