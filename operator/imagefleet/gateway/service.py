"""One generation request end to end: parse, route, authorize, queue by deadline, send, with metrics.

A routed request joins its route's queue (`queue.Lane`) when its predicted start leaves time to
finish by its deadline, and is shed with 429 + Retry-After otherwise, or when a bound is reached
(per route, per API key; over every route a 503). A dispatcher hands the next request of a lane
(fair between keys, earliest deadline first within one) to a pod with room whenever one has it:
after a request joins, when a poll or the watches change the fleet, and when a pod answers.

Demand is counted at the front door, per first-choice resource of the route: each arrival once,
the requests and GPU-seconds waiting, and the time they waited (`telemetry`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace

import httpx

from .auth import ApiKey, KeyRing
from .errors import BadGateway, GatewayError, Gone, Shed, Unavailable
from .fleet import Fleet, GroupKey, Resource, ResourceKey, upstream_body
from .holding import DemandPacer, HoldSlots, Send, cold, pick
from .idempotency import IdempotentAnswers
from .limits import InFlight, RateLimits, check_generation
from .picking import Candidate, Picker, PodLoad, fresh
from .queue import Capacity, Entry, Lane, admit, deadline_seconds, predicted_start, route_capacity
from .routing import TIER_BY_QUALITY, Route, models, overflow_problems, route, within
from .schemas import GatewayRequest, parse_request
from .telemetry import GatewayMetrics
from .upstream import LoadPoller, NotSent, Upstream, Vanished

logger = logging.getLogger(__name__)

# A waiting request re-signals demand for its cold resources at least this often.
HOLD_RECHECK_SECONDS = 1.0
# A request whose pod died holding it (no answer) is sent once more: nobody received an image.
VANISHED_RESENDS = 1
# Retry-After of a full queue whose drain cannot be predicted (no ready pod's rate known yet).
FULL_RETRY_SECONDS = 5.0
QUALITY_BY_TIER = {tier: quality for quality, tier in TIER_BY_QUALITY.items()}
LaneKey = tuple[str, str, str]  # (namespace, group, tier)


@dataclass(frozen=True)
class Settings:
    hold_timeout_seconds: float = 180.0
    max_held: int = 1000  # waiting over every route: more get a 503
    max_queued_per_route: int = 1000  # waiting for one route: more get a 429
    max_queued_per_key: int = 100  # waiting for one route from one API key (keys on): more get a 429
    poll_interval_seconds: float = 0.25
    generation_timeout_seconds: float = 600.0
    max_in_flight: int = 2000  # generation requests served at once (held, sent or reading a body): more get a 503
    max_in_flight_per_key: int = 200  # of them from one API key (keys on)
    idempotency_window_seconds: float = 600.0  # an Idempotency-Key's answer is replayed this long
    idempotency_max_bytes: int = 64 * 2**20  # answers kept for replays, in all


SignalDemand = Callable[[Resource], Awaitable[None]]


@dataclass(eq=False)
class Waiting:
    """A request in a lane, with where the dispatcher sent it."""

    entry: Entry
    lane_key: LaneKey
    api_key: ApiKey | None  # what it may be sent to: the lane's route is every key's
    shares: tuple[tuple[str, str], ...]  # the demand labels it counts on
    tried: set[str] = field(default_factory=set)
    sent: asyncio.Future[Send] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # When the dispatcher last handed it to a pod (a pod that refused it puts it back in line).
    dispatched_at: float | None = None


class Gateway:
    """The state the routes share: the fleet cache, pod loads, in-flight counts, the queues and metrics."""

    def __init__(self, settings: Settings, *, signal_demand: SignalDemand | None = None,
                 keys: KeyRing | None = None, picker: Picker | None = None) -> None:
        self.settings = settings
        self.fleet = Fleet()
        self.loads: dict[str, PodLoad] = {}
        self.in_flight: Counter[str] = Counter()
        self.keys = keys
        self.picker = picker or Picker()
        self.metrics = GatewayMetrics()
        self.rate_limits = RateLimits()
        self.serving = InFlight(settings.max_in_flight, settings.max_in_flight_per_key)
        self.answers = IdempotentAnswers(settings.idempotency_window_seconds, settings.idempotency_max_bytes)
        self.slots = HoldSlots(settings.max_held)
        self.pacer = DemandPacer()
        self.lane_pacer = DemandPacer()
        self.lanes: dict[LaneKey, Lane] = {}
        self._waiting: dict[Entry, Waiting] = {}
        self.ignored: dict[ResourceKey, str] = {}
        self.upstream = Upstream(generation_timeout=settings.generation_timeout_seconds)
        self.poller = LoadPoller(self.upstream, self.fleet.all_endpoints, self.loads, self.dispatch_all,
                                 settings.poll_interval_seconds)
        self._signal_demand = signal_demand
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the cache ------------------------------------------------------------

    def fleet_changed(self, groups: Collection[GroupKey] | None = None) -> None:
        """Call after the watches changed the fleet: re-check overflow targets, poll new pods, and
        dispatch the lanes of the model groups that changed (all of them when `groups` is None)."""
        problems = overflow_problems(self.fleet.resources)
        for key in problems.keys() - self.ignored.keys():
            logger.warning("%s/%s: %s; ignoring it", *key, problems[key])
        self.ignored = problems
        self.metrics.ignored_overflow.set(len(problems))
        self.poller.kick()
        for lane_key in list(self.lanes):
            if groups is None or lane_key[:2] in groups:
                self.dispatch(lane_key)

    def candidates(self, route_: Route, exclude: set[str]) -> dict[ResourceKey, list[Candidate]]:
        return {
            resource.key: [Candidate(url, resource, self.loads.get(url), self.in_flight[url])
                           for url in self.fleet.endpoints(resource) if url not in exclude]
            for stage in route_.stages for resource in stage
        }

    def model_groups(self, key: ApiKey | None) -> dict[str, tuple[str, ...]]:
        return models(self.fleet.resources.values(), key)

    async def start(self) -> None:
        self._spawn(self.poller.run())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one request ----------------------------------------------------------

    async def generate(self, raw: bytes, key: ApiKey | None, deadline_header: str | None = None) -> httpx.Response:
        """The pod's answer for a generation request, or a GatewayError."""
        request, body = parse_request(raw)
        route_ = route(self.fleet.resources, request.model, request.quality, self.ignored, key)
        check_generation(route_, request)  # before it is held or wakes anything
        first = route_.stages[0]
        deadline = deadline_seconds(deadline_header, min(r.target_p95_seconds for r in first))
        shares = tuple((r.namespace, r.name) for r in first)
        for labels in shares:
            self.metrics.arrivals.labels(*labels).inc(1 / len(shares))
        try:
            response = await self._serve(route_, request, body, key, deadline, shares)
        except GatewayError as error:
            self.metrics.requests.labels(route_.group, route_.tier, str(error.status)).inc()
            raise
        self.metrics.requests.labels(route_.group, route_.tier, str(response.status_code)).inc()
        return response

    async def _serve(self, route_: Route, request: GatewayRequest, body: bytes, api_key: ApiKey | None,
                     deadline: float, shares: tuple[tuple[str, str], ...]) -> httpx.Response:
        key = api_key.name if api_key else ""
        now = time.monotonic()
        lane_key = (route_.namespace, route_.group, route_.tier)
        lane = self.lanes.setdefault(lane_key, Lane())
        pricing = route_.stages[0][0].pricing
        work = None if pricing is None else pricing.work_seconds(
            steps=request.steps, size=request.dimensions(), images=request.n)
        self._admit(route_, lane, api_key, deadline, now)
        if not self.slots.take():
            raise Unavailable(f"{self.slots.limit} requests are already waiting; retry later", code="too_many_held",
                              retry_after=5)
        waiting = Waiting(Entry(key, now + deadline, work), lane_key, api_key, shares)
        give_up = now + self.settings.hold_timeout_seconds
        resends = 0
        try:
            while True:
                self._enqueue(lane, waiting)
                send = await self._wait_for_pod(waiting, give_up)
                candidate = send.candidate
                if send.overflowed:
                    self.metrics.overflowed.labels(route_.group, route_.tier, candidate.resource.name).inc()
                try:
                    response = await self._send(lane_key, candidate.url, upstream_body(candidate.resource, body))
                    self.metrics.resource_seconds.labels(*candidate.resource.key).observe(time.monotonic() - now)
                    return response
                except NotSent as error:
                    logger.info("sending again: %s", error)
                    self.metrics.retries.inc()
                    if error.saturated and candidate.load is not None:
                        # Full until the next poll says otherwise.
                        self.loads[candidate.url] = replace(candidate.load, queued=candidate.load.queue_limit,
                                                            observed_at=time.monotonic())
                    else:
                        waiting.tried.add(candidate.url)
                except Vanished as error:
                    if resends >= VANISHED_RESENDS:
                        raise BadGateway(f"the pod died while generating, {resends + 1} times; giving up",
                                         code="upstream_failed") from error
                    resends += 1
                    logger.info("the pod died holding a request, which nobody received: sending it again (%s)",
                                error)
                    self.metrics.retries.inc()
                    waiting.tried.add(candidate.url)
                waiting.sent = asyncio.get_running_loop().create_future()
        finally:
            self._leave(lane, waiting)
            self.slots.give_back()
            if waiting.dispatched_at is not None:  # once per request, however often it was put back
                for labels in shares:
                    self.metrics.queue_wait.labels(*labels).observe(waiting.dispatched_at - now)

    def _admit(self, route_: Route, lane: Lane, api_key: ApiKey | None, deadline: float, now: float) -> None:
        """Shed (429) when a bound is reached or the deadline cannot be met; else the request may wait."""
        group, tier = route_.group, route_.tier
        capacity = self._capacity(route_, now)
        key = api_key.name if api_key else ""
        # Keys off: no per-key bound. A key's own maxQueued beats the gateway's.
        per_key_full = api_key is not None and lane.count(key) >= (
            api_key.max_queued or self.settings.max_queued_per_key)
        if lane.size >= self.settings.max_queued_per_route or per_key_full:
            self.metrics.shed.labels(group, tier).inc()
            bound = ("per route" if lane.size >= self.settings.max_queued_per_route
                     else f"per API key{f' ({key})' if key else ''}")
            # When the requests ahead of it would have started: then there is room again.
            start = math.inf if capacity is None else predicted_start(lane.ahead_of(key) + capacity.at_pods, capacity)
            raise Shed(f"the queue of model group {group!r} ({tier}) is full {bound}; retry later",
                       code="queue_full", retry_after=start if math.isfinite(start) else FULL_RETRY_SECONDS)
        admission = admit(lane.ahead_of(key), capacity, deadline)
        if admission.retry_after is not None:
            self.metrics.shed.labels(group, tier).inc()
            raise Shed(f"model group {group!r} ({tier}) cannot start this request within its {deadline:g}s "
                       f"deadline (predicted start in {admission.predicted_start:.1f}s); retry later",
                       code="deadline_unmet", retry_after=admission.retry_after)

    def _capacity(self, route_: Route, now: float) -> Capacity | None:
        """The route's first stage as the queue's prediction sees it (None: no ready pod's rate known)."""
        rates, batches, at_pods, starting = [], [], 0.0, []
        for resource in route_.stages[0]:
            starting.extend(self.fleet.starting(resource))
            for url in self.fleet.endpoints(resource):
                candidate = Candidate(url, resource, self.loads.get(url), self.in_flight[url])
                load = candidate.load
                if load is None or not fresh(candidate, now) or not load.ready or not load.batch_seconds:
                    continue
                rates.append(load.max_batch_size / load.batch_seconds)
                batches.append(load.batch_seconds)
                at_pods += candidate.waiting()
        return route_capacity(rates, at_pods, starting, batches)

    def _enqueue(self, lane: Lane, waiting: Waiting) -> None:
        lane.push(waiting.entry)
        self._waiting[waiting.entry] = waiting
        self._count_waiting(waiting, +1)
        self.dispatch(waiting.lane_key)

    def _leave(self, lane: Lane, waiting: Waiting) -> None:
        """A request that is done, shed, timed out or whose client left: out of the queue, and not counted."""
        if lane.remove(waiting.entry):
            self._waiting.pop(waiting.entry, None)
            self._count_waiting(waiting, -1)

    async def _wait_for_pod(self, waiting: Waiting, give_up: float) -> Send:
        """The pod the dispatcher chose; signals demand for cold resources while it waits."""
        while True:
            now = time.monotonic()
            self._signal_cold(waiting.lane_key, now)
            remaining = give_up - now
            if remaining <= 0:
                _, group, tier = waiting.lane_key
                self.metrics.hold_timeouts.labels(group, tier).inc()
                raise Unavailable(f"no pod of model group {group!r} ({tier}) could take the request within "
                                  f"{self.settings.hold_timeout_seconds:.0f}s", code="no_ready_pod", retry_after=10)
            try:
                return await asyncio.wait_for(asyncio.shield(waiting.sent), min(remaining, HOLD_RECHECK_SECONDS))
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                self._release_unused(waiting)
                raise

    def _release_unused(self, waiting: Waiting) -> None:
        """The client left after the dispatcher chose a pod for it: give the pod's slot back."""
        sent = waiting.sent
        if sent.done() and not sent.cancelled():
            self._done_with(sent.result().candidate.url)
        else:
            sent.cancel()

    def _signal_cold(self, lane_key: LaneKey, now: float) -> None:
        """Signal demand for the lane's cold resources (each at most once per second; the lane is
        looked at once per second, however many requests wait in it)."""
        if self._signal_demand is None or not self.lane_pacer.due(lane_key, now):
            return
        route_ = self._route(lane_key)
        if route_ is None:
            return
        for resource in cold(route_, self.candidates(route_, set())):
            if self.pacer.due(resource.key, now):
                self._spawn(self._signal(resource))

    def _route(self, lane_key: LaneKey) -> Route | None:
        namespace, group, tier = lane_key
        try:
            return route(self.fleet.resources, f"{namespace}/{group}", QUALITY_BY_TIER[tier],  # type: ignore[index]
                         self.ignored)
        except GatewayError:
            return None  # the group or its tier is gone; waiting requests time out

    # -- dispatch -------------------------------------------------------------

    def dispatch_all(self) -> None:
        for lane_key in list(self.lanes):
            self.dispatch(lane_key)

    def dispatch(self, lane_key: LaneKey) -> None:
        """Hand the lane's next requests to pods with room, in fair order, while there is room."""
        lane = self.lanes.get(lane_key)
        if lane is None or not lane.size:
            return
        route_ = self._route(lane_key)
        if route_ is None:
            self._gone(lane_key, lane)
            return
        now = time.monotonic()
        skipped: list[Waiting] = []  # only pods they were refused by have room
        while (entry := lane.pop()) is not None:
            waiting = self._waiting.pop(entry)
            allowed = within(route_, waiting.api_key)  # never an overflow to a tier its key may not use
            send = pick(allowed, self.candidates(allowed, waiting.tried), now, self.picker)
            if send is None:
                skipped.append(waiting)
                if not waiting.tried and allowed is route_:
                    break  # no pod has room for anyone
                continue
            self._count_waiting(waiting, -1)
            waiting.dispatched_at = now
            self.in_flight[send.candidate.url] += 1  # reserved: the next pick sees it
            waiting.sent.set_result(send)
        for waiting in skipped:  # back in line, with their deadlines
            lane.push(waiting.entry)
            self._waiting[waiting.entry] = waiting

    def _gone(self, lane_key: LaneKey, lane: Lane) -> None:
        """The lane's model group or tier was deleted: its waiting requests get 410 now (those sent to a pod finish)."""
        _, group, tier = lane_key
        while (entry := lane.pop()) is not None:
            waiting = self._waiting.pop(entry)
            self._count_waiting(waiting, -1)
            if not waiting.sent.done():
                waiting.sent.set_exception(Gone(f"model group {group!r} ({tier}) was deleted while this request "
                                                "waited for a pod", param="model", code="model_deleted"))

    def _count_waiting(self, waiting: Waiting, sign: int) -> None:
        share = 1 / len(waiting.shares)
        for labels in waiting.shares:
            self.metrics.queued.labels(*labels).inc(sign * share)
            self.metrics.queued_work.labels(*labels).inc(sign * share * (waiting.entry.work_seconds or 0.0))
        self.metrics.held.labels(*waiting.lane_key[1:]).inc(sign)

    async def _send(self, lane_key: LaneKey, url: str, body: bytes) -> httpx.Response:
        """Send on the slot the dispatcher reserved; free it (and dispatch again) when the pod answers."""
        started = time.monotonic()
        try:
            return await self.upstream.generate(url, body)
        finally:
            self.metrics.upstream_seconds.observe(time.monotonic() - started)
            self._done_with(url)
            self.dispatch(lane_key)

    def _done_with(self, url: str) -> None:
        self.in_flight[url] -= 1
        if not self.in_flight[url]:
            del self.in_flight[url]

    async def _signal(self, resource: Resource) -> None:
        assert self._signal_demand is not None
        try:
            await self._signal_demand(resource)
        except Exception:  # noqa: BLE001 - logged; the next recheck signals again
            logger.exception("could not signal demand for %s/%s", resource.namespace, resource.name)
