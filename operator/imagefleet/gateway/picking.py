"""Endpoint picking, shaped like the llm-d router: filters drop pods that cannot serve, scorers give
each remaining pod a number, the picker takes the best. Never random: ties go round-robin.

A pod's outstanding work is the gateway's own in-flight count to it plus the queue its `/v1/load`
reported at the last poll. Saturation is explicit: a pod is saturated when its queue is full or
its predicted wait is above the resource's p95 target, and a pod whose load is stale counts as
saturated, never as idle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .fleet import Resource

# A poll older than this is stale (the poller runs every ~0.25 s).
STALE_AFTER_SECONDS = 2.0


@dataclass(frozen=True)
class PodLoad:
    """One poll of a pod's GET /v1/load."""

    ready: bool
    queued: int
    running: int
    queue_limit: int
    max_batch_size: int
    batch_seconds: float | None
    observed_at: float  # monotonic seconds


@dataclass(frozen=True)
class Candidate:
    url: str
    resource: Resource
    load: PodLoad | None  # None until the first poll answered
    in_flight: int  # this gateway's requests to the pod, not yet answered

    def waiting(self) -> int:
        """Requests ahead of a new one in the pod's queue: the polled queue, or more when this gateway
        alone has sent more than one batch since (the poll lags)."""
        assert self.load is not None
        return max(self.load.queued, self.in_flight - self.load.max_batch_size)

    def predicted_wait(self) -> float:
        """Seconds until a new request would finish here: the batches ahead of it, plus its own."""
        assert self.load is not None
        batch = self.load.batch_seconds or 0.0
        return (math.ceil((self.waiting() + 1) / self.load.max_batch_size) + (self.load.running > 0)) * batch


Filter = Callable[[Candidate, float], bool]
Scorer = Callable[[Candidate], float]


def polled(candidate: Candidate, now: float) -> bool:
    return candidate.load is not None


def fresh(candidate: Candidate, now: float) -> bool:
    """Stale load counts as saturated."""
    return candidate.load is not None and now - candidate.load.observed_at <= STALE_AFTER_SECONDS


def serving(candidate: Candidate, now: float) -> bool:
    return candidate.load is not None and candidate.load.ready


def queue_has_room(candidate: Candidate, now: float) -> bool:
    return candidate.load is not None and candidate.waiting() < candidate.load.queue_limit


def within_p95_target(candidate: Candidate, now: float) -> bool:
    """An idle pod always passes: a target it misses even idle is for the spec to fix, not a reason to shed."""
    if candidate.load is None:
        return False
    idle = candidate.waiting() == 0 and candidate.load.running == 0 and candidate.in_flight == 0
    return idle or candidate.predicted_wait() <= candidate.resource.target_p95_seconds


FILTERS: tuple[Filter, ...] = (polled, fresh, serving, queue_has_room, within_p95_target)


def in_flight_score(candidate: Candidate) -> float:
    return -float(candidate.in_flight)


def queue_score(candidate: Candidate) -> float:
    assert candidate.load is not None
    return -float(candidate.load.queued)


# (scorer, weight): the score is the weighted sum. Outstanding work = own in-flight + the pod's queue.
SCORERS: tuple[tuple[Scorer, float], ...] = ((in_flight_score, 1.0), (queue_score, 1.0))


def usable(candidates: Sequence[Candidate], now: float, filters: Sequence[Filter] = FILTERS) -> list[Candidate]:
    return [c for c in candidates if all(check(c, now) for check in filters)]


def score(candidate: Candidate, scorers: Sequence[tuple[Scorer, float]] = SCORERS) -> float:
    return sum(weight * scorer(candidate) for scorer, weight in scorers)


class Picker:
    """Max score; among equal scores, the next in a rotating order (round-robin, not random)."""

    def __init__(self, scorers: Sequence[tuple[Scorer, float]] = SCORERS) -> None:
        self._scorers = scorers
        self._turn = 0

    def pick(self, candidates: Sequence[Candidate]) -> Candidate:
        scores = [score(c, self._scorers) for c in candidates]
        best = max(scores)
        tied = sorted((c for c, s in zip(candidates, scores, strict=True) if s == best), key=lambda c: c.url)
        self._turn += 1
        return tied[self._turn % len(tied)]


class RoundRobinPicker(Picker):
    """The baseline the benchmark compares against: every usable pod in turn, load ignored."""

    def __init__(self) -> None:
        super().__init__(scorers=())
