"""Endpoint picking, shaped like the llm-d router: filters drop pods that cannot serve, scorers give
each remaining pod a number, the picker takes the best. Never random: ties go round-robin.

A pod's outstanding work is the gateway's own in-flight count to it plus the queue its `/v1/load`
reported at the last poll. Requests wait in the gateway's queue, not at the pods: a pod takes
one more only while less than one batch waits at it (so it always has its next batch, and a
request sent starts within about one batch). Saturation is explicit: a pod with a batch waiting
or a full queue is saturated, and a pod whose load is stale counts as saturated, never as idle.

A pool member's pods are ranked by residency (`imagefleet.pool.routing`) from what their last
poll said is resident: a pod holding the member's checkpoint and adapters first while it serves
within the member's target, else the one that finishes first, swap included. No API call per
request: the polls and the gateway's own in-flight counts are all it reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ..pool.routing import PodView, Rank, Recent, Resident, gpu_copies, place, rank
from .fleet import Resource

# A poll older than this is stale (the poller runs every ~0.25 s).
STALE_AFTER_SECONDS = 2.0


@dataclass(frozen=True)
class ResidentLoad:
    """A pool pod's `resident` (most recent first); adapters as (checkpoint, adapter) pairs."""

    gpu: tuple[str, ...]
    host: tuple[str, ...]
    adapters: tuple[tuple[str, str], ...]
    gpu_budget_mib: float


class ResidentAdapterAnswer(BaseModel):
    model_config = ConfigDict(strict=True)

    checkpoint: str
    name: str


class ResidentAnswer(BaseModel):
    """The `resident` field of a pool pod's GET /v1/load, checked (extra fields are ignored)."""

    model_config = ConfigDict(strict=True)

    gpu: list[str]
    host: list[str]
    adapters: list[ResidentAdapterAnswer]
    gpu_budget_mib: float = Field(ge=0, allow_inf_nan=False)

    def load(self) -> ResidentLoad:
        return ResidentLoad(tuple(self.gpu), tuple(self.host), tuple((a.checkpoint, a.name) for a in self.adapters),
                            self.gpu_budget_mib)


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
    resident: ResidentLoad | None = None  # pool pods only


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


def pod_view(candidate: Candidate, in_use: dict[str, int]) -> PodView:
    """A pool pod as the residency router sees it: what is resident for the candidate's member, the
    work ahead of a new request in seconds (the requests waiting and running, in calls of the pod's
    batch time), and the checkpoints in use there: `in_use` (sent lately, `Recent`) and the one it
    is busy with (a pod batches one checkpoint at a time, the most recently used)."""
    load, member = candidate.load, candidate.resource.pool
    assert load is not None and member is not None
    resident = load.resident or ResidentLoad((), (), (), 0.0)
    slots = 1
    if member.checkpoint_mib:
        slots = max(1, int(resident.gpu_budget_mib // member.checkpoint_mib))
    adapters = tuple(name for checkpoint, name in resident.adapters if checkpoint == member.checkpoint_key)
    ahead = candidate.waiting() + load.running
    wait = ahead / load.max_batch_size * (load.batch_seconds or 0.0)
    pending = dict(in_use)
    if ahead and resident.gpu:
        pending[resident.gpu[0]] = pending.get(resident.gpu[0], 0) + ahead
    return PodView(candidate.url, Resident(resident.gpu, resident.host, adapters, slots), wait, pending)


def residency_ranks(candidates: Sequence[Candidate], recent: Recent, now: float) -> list[Rank]:
    """Each candidate's rank by residency (lower is better), for pool members; see pool.routing."""
    views = [pod_view(c, recent.in_use(c.url, now)) for c in candidates]
    copies = gpu_copies(views)
    ranks = []
    for candidate, view in zip(candidates, views, strict=True):
        member, load = candidate.resource.pool, candidate.load
        assert member is not None and load is not None
        if member.prices is None:  # no swap figures: by outstanding work alone
            ranks.append((1, 0, 0.0, 0, view.wait_seconds))
            continue
        own = load.batch_seconds or 0.0
        placement = place(member.want, view, own, member.prices, copies)
        ranks.append(rank(placement, candidate.resource.target_p95_seconds))
    return ranks


class Picker:
    """Max score; among equal scores, the next in a rotating order (round-robin, not random). Pods
    of pool members go by residency (`residency_ranks`) instead of the scorers, and the picker
    remembers which checkpoint it sent where (`Recent`)."""

    def __init__(self, scorers: Sequence[tuple[Scorer, float]] = SCORERS, *, by_residency: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._scorers = scorers
        self._by_residency = by_residency
        self._clock = clock
        self._recent = Recent()
        self._turn = 0

    def pick(self, candidates: Sequence[Candidate]) -> Candidate:
        pooled = self._by_residency and all(c.resource.pool is not None for c in candidates)
        now = self._clock()
        keys: list[tuple[float, ...]]  # higher is better
        if pooled:
            keys = [tuple(-x for x in r) for r in residency_ranks(candidates, self._recent, now)]
        else:
            keys = [(score(c, self._scorers),) for c in candidates]
        best = max(keys)
        tied = sorted((c for c, k in zip(candidates, keys, strict=True) if k == best), key=lambda c: c.url)
        self._turn += 1
        chosen = tied[self._turn % len(tied)]
        if pooled:
            assert chosen.resource.pool is not None
            self._recent.sent(chosen.url, chosen.resource.pool.checkpoint_key, now)
        return chosen


class RoundRobinPicker(Picker):
    """The baseline the benchmark compares against: every usable pod in turn, load ignored."""

    def __init__(self) -> None:
        super().__init__(scorers=(), by_residency=False)
