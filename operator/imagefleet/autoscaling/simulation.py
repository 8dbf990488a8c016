"""A discrete-event model of a runtime fleet, for replaying load traces through a policy.

The service model follows the runtime and the live fleet:

- Requests arrive as a Poisson process at the trace's rate (piecewise constant)
  at the gateway, which queues them by deadline as `imagefleet.gateway.queue`
  does: a request is refused (HTTP 429) when its predicted start plus one batch
  is past the p95 target, counting the requests ahead of it, those waiting at the
  pods, the ready pods' rate and the starting pods from their ready time; with no
  ready pod it waits, up to `hold_timeout_seconds` (then 503, counted refused).
  The gateway hands the oldest waiting request to the ready pod with the least
  work whenever one has less than a full batch waiting.
- Each pod has its own queue and continuous batcher: a free pod starts a batch at
  once with the waiting requests, oldest first, up to `max_batch_size` (never
  waiting for more), and is busy for `batch_seconds + image_seconds * batch`.
- A new pod holds a GPU at once and serves `startup_seconds` after it is asked for.
  A pod scaled away takes no new requests, finishes its queue, then exits.
- A pod reports to the gateway what the runtime's /v1/load reports: the seconds of
  one full call, from a running average per call size (smoothing BATCH_TIME_SMOOTHING),
  seeded with the warm-up's full call, the largest size run scaled up linearly. So a
  pod that has only run small batches reports a slow full call, as live.
- Prometheus scrapes the gateway (its arrivals counter and queue gauge) and every
  serving pod every `scrape_interval_seconds`, at an offset of its own within the
  interval (drawn per seed, as is the evaluations' offset): the queue gauge and the runtime's counters (latency histogram with the runtime's buckets,
  batch seconds, batch sizes). Every `interval_seconds` the autoscaler reads what
  was scraped (up to the last whole `query_step_seconds`, for KEDA): the queue summed over the pods' last samples, and over the window
  rate() of the counters as Prometheus computes it (`prometheus_rate`: extrapolated
  to the window's edges, divided by the window, so a new pod's rate climbs over one
  window), the p95 as histogram_quantile computes it from the
  summed bucket rates, the busy replicas, the served rate and the mean batch;
  and the gateway's arrival rate and queue.

Results: replica-minutes (GPU-holding pod time), SLO-violation minutes (minutes of
arrival whose true p95 latency is above the target; a refused or never-served
request counts as over it), scale changes, requests, refusals.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imagefleet.gateway.queue import admit, route_capacity
from imagefleet.metrics import LATENCY_BUCKETS_SECONDS

from .policy import Observation

Autoscaler = Callable[[Observation], int]
# The runtime batcher's running average of a call's seconds per call size (imagefleet_runtime.batcher).
BATCH_TIME_SMOOTHING = 0.2


@dataclass(frozen=True)
class Fleet:
    batch_seconds: float = 0.5
    image_seconds: float = 1.0
    max_batch_size: int = 4
    startup_seconds: float = 60.0
    interval_seconds: float = 15.0
    scrape_interval_seconds: float = 15.0
    latency_window_seconds: float = 60.0
    hold_timeout_seconds: float = 180.0
    # Where the scrapes and the evaluations fall within their intervals: Prometheus's scrape loop
    # and the controller's sync (the HPA's re-queue one sync period after each sync; the operator's
    # loop) run on their own clocks, not the trace's, so samples are up to a scrape interval old
    # when read, and a load step lands anywhere within an evaluation interval. None: drawn per
    # seed, uniform within the interval.
    scrape_offset_seconds: float | None = None
    evaluation_offset_seconds: float | None = None
    # Prometheus evaluates the autoscaler's queries at the last whole step before it reads (0: at
    # once). KEDA's Prometheus scaler asks for the current time to the whole second (RFC 3339, in
    # pkg/scalers/prometheus_scaler.go), so its readings are up to 1 s older than the sync that
    # reads them; the step's phase against the trace is drawn per seed.
    query_step_seconds: float = 0.0

    def batch_time(self, size: int) -> float:
        return self.batch_seconds + self.image_seconds * size


@dataclass(frozen=True)
class Result:
    replica_minutes: float
    slo_violation_minutes: int
    scale_changes: int
    requests: int
    rejected: int
    p95_seconds: float
    scale_up_times: tuple[float, ...] = ()  # when the autoscaler asked for more replicas


@dataclass(frozen=True)
class _Scrape:
    """What one scrape of a pod's /metrics returns."""

    time: float
    queue_depth: int
    buckets: tuple[int, ...]  # cumulative, the last one +Inf
    served: int
    batch_seconds: float
    batches: int
    batched: int  # requests over all batches


@dataclass(eq=False)
class _Pod:
    started: float
    ready_at: float
    leaving: bool = False
    gone: bool = False
    queue: deque[float] = field(default_factory=deque)
    batch: list[float] = field(default_factory=list)
    busy_until: float = 0.0
    # Seconds of a call by its size, as the runtime's batcher averages them for /v1/load.
    calls: dict[int, float] = field(default_factory=dict)
    # The runtime's counters, as /metrics exposes them.
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_SECONDS) + 1))
    served: int = 0
    batch_seconds: float = 0.0
    batches: int = 0
    batched: int = 0
    scrapes: deque[_Scrape] = field(default_factory=deque)

    def load(self) -> int:
        return len(self.queue) + len(self.batch)

    def scrape(self, time: float) -> _Scrape:
        cumulative, total = [], 0
        for count in self.buckets:
            total += count
            cumulative.append(total)
        return _Scrape(time, len(self.queue), tuple(cumulative), self.served, self.batch_seconds, self.batches,
                       self.batched)


@dataclass
class _Gateway:
    """The gateway's queue of the route, and its two demand series as scraped."""

    waiting: deque[float] = field(default_factory=deque)  # arrival times, oldest first
    arrivals: int = 0
    scrapes: deque[tuple[float, int, int]] = field(default_factory=deque)  # (time, arrivals, queued)


def histogram_quantile(quantile: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts (the last one +Inf);
    None where it returns NaN (no observations)."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = quantile * total
    index = next(i for i, count in enumerate(cumulative) if count >= rank or i == len(cumulative) - 1)
    if index == len(bounds):
        return bounds[-1]  # in the +Inf bucket: the highest finite bound
    below = cumulative[index - 1] if index > 0 else 0.0
    lower = bounds[index - 1] if index > 0 else 0.0
    upper = bounds[index]
    return lower + (upper - lower) * (rank - below) / (cumulative[index] - below)


def prometheus_rate(samples: Sequence[tuple[float, float]], now: float, window: float) -> float:
    """PromQL's rate(counter[window]) at `now` from a series' (time, value) samples inside the window
    (at least two; the model's counters never reset), as Prometheus's extrapolatedRate computes it
    (promql/functions.go): the increase between the first and last sample, extrapolated to the
    window's edges where a sample is within 1.1 average sample intervals of the edge (else by half
    an interval), never back past the counter's zero, then divided by the whole window, not by the
    samples' span. So a series that starts inside the window (a pod that has just started
    serving, its first sample near 0) counts only the part of the window it covers: its rate
    climbs to the pod's true rate over one window."""
    (first_time, first), (last_time, last) = samples[0], samples[-1]
    increase = last - first
    sampled = last_time - first_time
    average = sampled / (len(samples) - 1)
    threshold = average * 1.1
    to_start, to_end = first_time - (now - window), now - last_time
    if to_start >= threshold:
        to_start = average / 2
    if increase > 0 and first >= 0:
        to_start = min(to_start, sampled * first / increase)
    if to_end >= threshold:
        to_end = average / 2
    return increase * (sampled + to_start + to_end) / sampled / window


def poisson_arrivals(trace: Sequence[tuple[float, float]], rng: random.Random) -> list[float]:
    """Arrival times of a Poisson process whose rate is the trace's (each rate holds until the next row)."""
    arrivals = []
    for (start, rate), (stop, _) in zip(trace, trace[1:]):
        if rate <= 0:
            continue
        time = start + rng.expovariate(rate)
        while time < stop:
            arrivals.append(time)
            time += rng.expovariate(rate)
    return arrivals


def slo_violation_minutes(latencies_by_minute: dict[int, list[float]], target_p95_seconds: float) -> int:
    """Minutes of arrival whose p95 latency is above the target (a refused request is `math.inf`)."""
    return sum(1 for values in latencies_by_minute.values() if nearest_rank_p95(values) > target_p95_seconds)


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
    events: list[tuple[float, int, str, _Pod | None]] = []
    order = 0

    def schedule(time: float, kind: str, pod: _Pod | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (time, order, kind, pod))

    for arrival in poisson_arrivals(trace, rng):
        schedule(arrival, "arrival")
    # At equal times scrapes come before evaluations (pushed first, lower order). The fleet is
    # scraped from its first offset on, idle before the trace: its counters' series start before
    # the trace does. The offsets come from their own generator, so a seed's arrivals stay the same.
    clocks = random.Random(f"{seed}/clocks")
    scrape_offset, evaluation_offset = (
        clocks.uniform(0.0, interval) if offset is None else offset
        for offset, interval in ((fleet.scrape_offset_seconds, fleet.scrape_interval_seconds),
                                 (fleet.evaluation_offset_seconds, fleet.interval_seconds))
    )
    query_offset = clocks.uniform(0.0, fleet.query_step_seconds)
    for kind, first, step in (("scrape", scrape_offset, fleet.scrape_interval_seconds),
                              ("evaluate", evaluation_offset + fleet.interval_seconds, fleet.interval_seconds)):
        tick = first
        while tick < end:
            schedule(tick, kind)
            tick += step

    def new_pod(started: float, ready_at: float) -> _Pod:
        """Warmed up with one full call: the runtime seeds its averages with it, as one image's share."""
        size = fleet.max_batch_size
        return _Pod(started=started, ready_at=ready_at, calls={1: fleet.batch_time(size) / size})

    pods = [new_pod(0.0, 0.0) for _ in range(initial_replicas)]
    gateway = _Gateway()
    scraped: list[_Pod] = list(pods)  # pods whose series Prometheus still holds
    replica_seconds = 0.0
    latencies_by_minute: dict[int, list[float]] = {}
    all_latencies: list[float] = []
    changes = rejected = 0
    scale_ups: list[float] = []

    def record(arrival: float, latency: float) -> None:
        latencies_by_minute.setdefault(int(arrival // 60), []).append(latency)
        all_latencies.append(latency)

    def try_start(time: float, pod: _Pod) -> None:
        if pod.batch or not pod.queue:
            return
        size = min(fleet.max_batch_size, len(pod.queue))
        pod.batch = [pod.queue.popleft() for _ in range(size)]
        pod.busy_until = time + fleet.batch_time(size)
        schedule(pod.busy_until, "done", pod)

    def call_seconds(pod: _Pod) -> float:
        """One full call, as the pod's /v1/load reports it: the largest size run, scaled up."""
        size = max(n for n in pod.calls if n <= fleet.max_batch_size)
        return pod.calls[size] * fleet.max_batch_size / size

    def admitted(time: float) -> bool:
        """The gateway's admission (`gateway.queue.admit`) over the ready pods' reported rates."""
        ready = [p for p in pods if p.ready_at <= time and not p.leaving]
        capacity = route_capacity(
            [fleet.max_batch_size / call_seconds(p) for p in ready],
            float(sum(len(p.queue) for p in ready)),
            [p.ready_at - time for p in pods if p.ready_at > time and not p.leaving],
            [call_seconds(p) for p in ready],
        )
        return admit(len(gateway.waiting), capacity, target_p95_seconds).retry_after is None

    def dispatch(time: float) -> None:
        nonlocal rejected
        while gateway.waiting and gateway.waiting[0] <= time - fleet.hold_timeout_seconds:
            rejected += 1
            record(gateway.waiting.popleft(), math.inf)
        while gateway.waiting:
            room = [p for p in pods if p.ready_at <= time and not p.leaving and len(p.queue) < fleet.max_batch_size]
            if not room:
                return
            chosen = min(room, key=_Pod.load)
            chosen.queue.append(gateway.waiting.popleft())
            try_start(time, chosen)

    def finish(time: float, pod: _Pod) -> None:
        size = len(pod.batch)
        for arrival in pod.batch:
            latency = time - arrival
            record(arrival, latency)
            pod.buckets[bisect.bisect_left(LATENCY_BUCKETS_SECONDS, latency)] += 1
        pod.served += size
        pod.batch_seconds += fleet.batch_time(size)
        average = pod.calls.get(size)
        elapsed = fleet.batch_time(size)
        pod.calls[size] = elapsed if average is None else average + BATCH_TIME_SMOOTHING * (elapsed - average)
        pod.batches += 1
        pod.batched += size
        pod.batch = []

    def retire(time: float, pod: _Pod) -> None:
        nonlocal replica_seconds
        replica_seconds += time - pod.started
        pod.gone = True
        pods.remove(pod)

    def query_time(time: float) -> float:
        """When the evaluation at `time` has Prometheus evaluate its queries."""
        if not fleet.query_step_seconds:
            return time
        return query_offset + math.floor((time - query_offset) / fleet.query_step_seconds) * fleet.query_step_seconds

    def observe(time: float) -> Observation:
        window = fleet.latency_window_seconds
        at = query_time(time)
        active = [p for p in pods if not p.leaving]
        upto = {id(p): [s for s in p.scrapes if s.time <= at] for p in scraped}
        reporting = [p for p in scraped if not p.gone and upto[id(p)]]
        rates: list[list[_Scrape]] = []
        for pod in scraped:
            inside = [s for s in upto[id(pod)] if s.time > at - window]
            if len(inside) >= 2:
                rates.append(inside)

        def rate(value: Callable[[_Scrape], float]) -> float:
            """sum(rate(counter[window])) over the pods' series."""
            return sum(prometheus_rate([(s.time, value(s)) for s in inside], at, window) for inside in rates)

        buckets = [rate(lambda s, i=i: s.buckets[i]) for i in range(len(LATENCY_BUCKETS_SECONDS) + 1)]
        calls = rate(lambda s: s.batches)
        gateway_scrapes = [scrape for scrape in gateway.scrapes if scrape[0] <= at]
        return Observation(
            time=time,
            replicas=len(active),
            ready_replicas=sum(1 for p in active if p.ready_at <= time),
            queue_depth=float(sum(upto[id(p)][-1].queue_depth for p in reporting)) if reporting else None,
            p95_seconds=histogram_quantile(0.95, LATENCY_BUCKETS_SECONDS, buckets) if rates else None,
            busy_replicas=rate(lambda s: s.batch_seconds) if rates else None,
            metrics_age_seconds=time - max(upto[id(p)][-1].time for p in reporting) if reporting else None,
            queue_series=sum(1 for p in reporting if not p.leaving),
            served_rate=rate(lambda s: s.served) if rates else None,
            batch_seconds=rate(lambda s: s.batch_seconds) / calls if calls > 0 else None,
            batch_size=rate(lambda s: s.batched) / calls if calls > 0 else None,
            gateway_arrival_rate=gateway_rate(gateway_scrapes, at, window),
            gateway_queued=float(gateway_scrapes[-1][2]) if gateway_scrapes else None,
        )

    def gateway_rate(scrapes: Sequence[tuple[float, int, int]], at: float, window: float) -> float | None:
        inside = [(scrape[0], float(scrape[1])) for scrape in scrapes if scrape[0] > at - window]
        if len(inside) < 2:
            return None
        return prometheus_rate(inside, at, window)

    while events:
        time, _, kind, pod = heapq.heappop(events)
        if kind == "arrival":
            gateway.arrivals += 1
            if not admitted(time):
                rejected += 1
                record(time, math.inf)
                continue
            gateway.waiting.append(time)
            dispatch(time)
        elif kind == "done":
            assert pod is not None
            finish(time, pod)
            if pod.leaving and not pod.queue:
                retire(time, pod)
            else:
                try_start(time, pod)
            dispatch(time)
        elif kind == "ready":
            dispatch(time)
        elif kind == "scrape":
            gateway.scrapes.append((time, gateway.arrivals, len(gateway.waiting)))
            horizon = time - fleet.latency_window_seconds - fleet.scrape_interval_seconds - fleet.query_step_seconds
            while gateway.scrapes and gateway.scrapes[0][0] < horizon:
                gateway.scrapes.popleft()
            dispatch(time)  # the hold timeout, checked at least this often
            for candidate in pods:
                if candidate.ready_at <= time:
                    if candidate not in scraped:
                        scraped.append(candidate)
                    candidate.scrapes.append(candidate.scrape(time))
            for candidate in scraped:
                while candidate.scrapes and candidate.scrapes[0].time < horizon:
                    candidate.scrapes.popleft()
            scraped = [p for p in scraped if p.scrapes or not p.gone]
        else:
            observation = observe(time)
            active = [p for p in pods if not p.leaving]
            desired = autoscaler(observation)
            if desired != len(active):
                changes += 1
            if desired > len(active):
                scale_ups.append(time)
            for _ in range(desired - len(active)):
                pods.append(new_pod(time, time + fleet.startup_seconds))
                schedule(time + fleet.startup_seconds, "ready")
            # Scale down: starting pods first, then the ones with the least work.
            victims = sorted(active, key=lambda p: (p.ready_at <= time, p.load()))[: max(0, len(active) - desired)]
            for victim in victims:
                victim.leaving = True
                if not victim.batch and (not victim.queue or victim.ready_at > time):
                    retire(time, victim)

    for pod in list(pods):
        retire(max(end, pod.busy_until if pod.batch else end), pod)
        for arrival in pod.queue:  # never served: waiting until the end
            record(arrival, end - arrival)
    for arrival in gateway.waiting:
        record(arrival, end - arrival)
    violations = slo_violation_minutes(latencies_by_minute, target_p95_seconds)
    return Result(
        replica_minutes=replica_seconds / 60.0,
        slo_violation_minutes=violations,
        scale_changes=changes,
        requests=len(all_latencies),
        rejected=rejected,
        p95_seconds=nearest_rank_p95(all_latencies),
        scale_up_times=tuple(scale_ups),
    )


def nearest_rank_p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (the value at rank ceil(0.95 n)); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
