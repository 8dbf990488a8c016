"""Endpoint picking, shaped like the llm-d router: filters drop pods that cannot serve, scorers give
each remaining pod a number, the picker takes the best. Never random: ties go round-robin.

A pod's outstanding work is the gateway's own in-flight count to it plus the queue its `/v1/load`
reported at the last poll. Requests wait in the gateway's queue, not at the pods: a pod takes
one more only while less than one batch waits at it (so it always has its next batch, and a
request sent starts within about one batch). Saturation is explicit: a pod with a batch waiting
or a full queue is saturated, and a pod whose load is stale counts as saturated, never as idle.
"""

from __future__ import annotations

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


def batch_has_room(candidate: Candidate, now: float) -> bool:
    """Less than one batch waits at the pod: what is sent now runs in its next batch."""
    return candidate.load is not None and candidate.waiting() < candidate.load.max_batch_size


FILTERS: tuple[Filter, ...] = (polled, fresh, serving, queue_has_room, batch_has_room)


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
