"""The gateway's queue: requests wait here by deadline, not at the pods, and not shed at once.

One `Lane` per route (model group and tier). A request joins it when its predicted start leaves
time to finish by its deadline (`admit`): the prediction counts the requests that fair dequeue
puts ahead of it, the requests already waiting at the pods, the ready pods' rate and the pods
still starting with the time each is expected to serve. Otherwise it is shed at once with 429
and a Retry-After from the same prediction. A route with no ready pod yet (scaled to zero,
starting) takes every request: capacity is coming, and the hold timeout bounds the wait.

Dequeue is fair between API keys (each key with waiting requests in turn) and earliest deadline
first within a key. A request whose client left is removed at once (`Lane.remove`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import InvalidRequest

# The header a client sets for a deadline shorter than its tier's p95 target (seconds, decimal).
DEADLINE_HEADER = "X-Imagefleet-Deadline-Seconds"


def deadline_seconds(header: str | None, target_p95_seconds: float) -> float:
    """The request's deadline: the tier's p95 target, or the header's shorter one.

    A header longer than the target is capped at the target (the tier's promise is the
    longest wait the gateway queues for); one that is not a positive number is a 400.
    """
    if header is None:
        return target_p95_seconds
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"{DEADLINE_HEADER} must be a positive number of seconds, got {header!r}",
                             param=DEADLINE_HEADER, code="invalid_deadline")
    return min(value, target_p95_seconds)


@dataclass(frozen=True)
class Capacity:
    """What serves a route's queue: the ready pods' rate and the pods still starting."""

    ready_rate: float  # requests per second the ready pods serve together
    pod_rate: float  # requests per second of one pod (what a starting pod adds once it serves)
    starting_in: tuple[float, ...]  # seconds until each starting pod serves
    at_pods: float  # requests waiting at the pods, not yet running
    service_seconds: float  # one batch: a request's own time once it starts


def predicted_start(ahead: float, capacity: Capacity) -> float:
    """Seconds until `ahead` requests before this one have started (inf when no capacity comes).

    Served by time t: ready_rate * t, plus pod_rate * (t - s) for each pod starting at s < t.
    """
    if ahead <= 0:
        return 0.0
    rate, served, now = capacity.ready_rate, 0.0, 0.0
    for start in sorted(capacity.starting_in):
        if rate > 0 and served + rate * (start - now) >= ahead:
            break
        served += rate * max(0.0, start - now)
        now = max(now, start)
        rate += capacity.pod_rate
    if rate <= 0:
        return math.inf
    return now + (ahead - served) / rate


@dataclass(eq=False)
class Entry:
    """One waiting request."""

    key: str  # the API key's name ("" when keys are off): the unit of fairness
    deadline: float  # monotonic seconds by which it should finish
    work_seconds: float | None
    seq: int = 0
    removed: bool = False


@dataclass
class Lane:
    """Waiting requests of one route: fair between keys, earliest deadline first within a key."""

    _heaps: dict[str, list[tuple[float, int, Entry]]] = field(default_factory=dict)
    _turns: deque[str] = field(default_factory=deque)
    _counts: dict[str, int] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    size: int = 0
    work_seconds: float = 0.0

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def ahead_of(self, key: str) -> int:
        """Requests a new request of `key` would find ahead of it under fair dequeue: its key's own,
        and from each other key at most one more than that (one per turn)."""
        own = self.count(key)
        return own + sum(min(count, own + 1) for other, count in self._counts.items() if other != key)

    def push(self, entry: Entry) -> None:
        entry.seq = next(self._seq)
        entry.removed = False
        heap = self._heaps.setdefault(entry.key, [])
        if not heap:
            self._turns.append(entry.key)
        heapq.heappush(heap, (entry.deadline, entry.seq, entry))
        self._counts[entry.key] = self._counts.get(entry.key, 0) + 1
        self.size += 1
        self.work_seconds += entry.work_seconds or 0.0

    def remove(self, entry: Entry) -> bool:
        """Take a waiting entry out (its client left); False when it was not waiting."""
        if entry.removed or entry.key not in self._heaps:
            return False
        entry.removed = True
        self._forget(entry)
        return True

    def pop(self) -> Entry | None:
        """The next request: the key whose turn it is, its earliest deadline."""
        while self._turns:
            key = self._turns.popleft()
            heap = self._heaps.get(key, [])
            while heap and heap[0][2].removed:
                heapq.heappop(heap)
            if not heap:
                self._heaps.pop(key, None)
                continue
            _, _, entry = heapq.heappop(heap)
            while heap and heap[0][2].removed:
                heapq.heappop(heap)
            if heap:
                self._turns.append(key)
            else:
                self._heaps.pop(key, None)
            entry.removed = True
            self._forget(entry)
            return entry
        return None

    def _forget(self, entry: Entry) -> None:
        self._counts[entry.key] -= 1
        if not self._counts[entry.key]:
            del self._counts[entry.key]
        self.size -= 1
        self.work_seconds = max(0.0, self.work_seconds - (entry.work_seconds or 0.0))


@dataclass(frozen=True)
class Admission:
    """Whether a request may wait: `retry_after` is None when it may, else the seconds to wait."""

    retry_after: float | None
    predicted_start: float


def admit(ahead: float, capacity: Capacity | None, deadline: float) -> Admission:
    """A request may wait while its predicted start leaves one batch's time before its deadline.

    `capacity` None: the route has no ready pod whose rate is known yet (cold, starting, or before
    its first batch): nothing to predict with, so it waits (bounded by the hold timeout).
    """
    if capacity is None:
        return Admission(None, math.nan)
    start = predicted_start(ahead + capacity.at_pods, capacity)
    late = start + capacity.service_seconds - deadline
    if late <= 0:
        return Admission(None, start)
    return Admission(late if math.isfinite(late) else capacity.service_seconds, start)


def route_capacity(rates: Sequence[float], at_pods: float, starting_in: Sequence[float],
                   batch_seconds: Sequence[float]) -> Capacity | None:
    """A route's capacity from its ready pods' rates and batch times; None when no rate is known."""
    if not rates:
        return None
    return Capacity(ready_rate=sum(rates), pod_rate=sum(rates) / len(rates), starting_in=tuple(starting_in),
                    at_pods=at_pods, service_seconds=max(batch_seconds, default=0.0))
