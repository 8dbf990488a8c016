"""One generation request end to end: parse, route, authorize, then send / hold / shed, with metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import httpx

from .auth import ApiKey
from .errors import GatewayError, Shed, Unavailable
from .fleet import Fleet, Resource, ResourceKey
from .holding import Changes, DemandPacer, Hold, HoldSlots, Send, ShedAll, decide
from .picking import Candidate, Picker, PodLoad
from .routing import Route, models, overflow_problems, reroute, route
from .schemas import parse_request
from .telemetry import GatewayMetrics
from .upstream import LoadPoller, NotSent, Upstream

logger = logging.getLogger(__name__)

# A held request re-checks (and re-signals demand) at least this often.
HOLD_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Settings:
    hold_timeout_seconds: float = 180.0
    max_held: int = 1000
    poll_interval_seconds: float = 0.25
    generation_timeout_seconds: float = 600.0


SignalDemand = Callable[[Resource], Awaitable[None]]


class Gateway:
    """The state the routes share: the fleet cache, pod loads, in-flight counts, holds and metrics."""

    def __init__(self, settings: Settings, *, signal_demand: SignalDemand | None = None,
                 keys: KeyRing | None = None, picker: Picker | None = None) -> None:
        self.settings = settings
        self.fleet = Fleet()
        self.loads: dict[str, PodLoad] = {}
        self.in_flight: Counter[str] = Counter()
        self.keys = keys
        self.picker = picker or Picker()
        self.metrics = GatewayMetrics()
        self.changes = Changes()
        self.slots = HoldSlots(settings.max_held)
        self.pacer = DemandPacer()
        self.ignored: dict[ResourceKey, str] = {}
        self.upstream = Upstream(generation_timeout=settings.generation_timeout_seconds)
        self.poller = LoadPoller(self.upstream, self.fleet.all_endpoints, self.loads, self.changes.notify,
                                 settings.poll_interval_seconds)
        self._signal_demand = signal_demand
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the cache ------------------------------------------------------------

    def fleet_changed(self) -> None:
        """Call after the watches changed the fleet: re-check overflow targets, poll new pods, wake holds."""
        problems = overflow_problems(self.fleet.resources)
        for key in problems.keys() - self.ignored.keys():
            logger.warning("%s/%s: %s; ignoring it", *key, problems[key])
        self.ignored = problems
        self.metrics.ignored_overflow.set(len(problems))
        self.poller.kick()
        self.changes.notify()

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

    async def generate(self, raw: bytes, key: ApiKey | None) -> httpx.Response:
        """The pod's answer for a generation request, or a GatewayError."""
        request, body = parse_request(raw)
        route_ = route(self.fleet.resources, request.model, request.quality, self.ignored, key)
        try:
            response = await self._serve(route_, request.quality, body)
        except GatewayError as error:
            self.metrics.requests.labels(route_.group, route_.tier, str(error.status)).inc()
            raise
        self.metrics.requests.labels(route_.group, route_.tier, str(response.status_code)).inc()
        return response

    async def _serve(self, route_: Route, quality: str | None, body: bytes) -> httpx.Response:
        deadline = time.monotonic() + self.settings.hold_timeout_seconds
        tried: set[str] = set()
        held: tuple[str, str] | None = None
        try:
            while True:
                now = time.monotonic()
                # The fleet may have changed while held: route again (cheap, no I/O).
                route_ = reroute(self.fleet.resources, route_, self.ignored)
                candidates = self.candidates(route_, tried)
                decision = decide(route_, candidates, now, self.picker)
                # A preferred resource without a pod is demand even while its overflow serves.
                cold = decision.cold if isinstance(decision, Hold) else tuple(
                    r for r in route_.stages[0] if not candidates.get(r.key))
                for resource in cold:
                    if self._signal_demand is not None and self.pacer.due(resource.key, now):
                        self._spawn(self._signal(resource))
                if isinstance(decision, Send):
                    candidate = decision.candidate
                    if decision.overflowed:
                        self.metrics.overflowed.labels(route_.group, route_.tier, candidate.resource.name).inc()
                    try:
                        return await self._send(candidate.url, body)
                    except NotSent as error:
                        logger.info("sending again: %s", error)
                        self.metrics.retries.inc()
                        if error.saturated and candidate.load is not None:
                            # Full until the next poll says otherwise.
                            self.loads[candidate.url] = replace(candidate.load, queued=candidate.load.queue_limit,
                                                                observed_at=time.monotonic())
                        else:
                            tried.add(candidate.url)
                        continue
                if isinstance(decision, ShedAll):
                    self.metrics.shed.labels(route_.group, route_.tier).inc()
                    raise Shed(f"every pod of model group {route_.group!r} ({route_.tier}) is saturated; retry later",
                               code="saturated", retry_after=decision.retry_after)
                assert isinstance(decision, Hold)
                if held is None:
                    if not self.slots.take():
                        raise Unavailable(f"{self.slots.limit} requests are already waiting for pods to start; "
                                          "retry later", code="too_many_held", retry_after=5)
                    held = (route_.group, route_.tier)
                    self.metrics.held.labels(*held).inc()
                remaining = deadline - now
                if remaining <= 0:
                    self.metrics.hold_timeouts.labels(route_.group, route_.tier).inc()
                    waiting_for = ", ".join(r.name for r in decision.cold) or "a polled pod"
                    raise Unavailable(f"no pod of model group {route_.group!r} ({route_.tier}) became ready within "
                                      f"{self.settings.hold_timeout_seconds:.0f}s (waiting for {waiting_for})",
                                      code="no_ready_pod", retry_after=10)
                await self.changes.wait(min(remaining, HOLD_RECHECK_SECONDS))
        finally:
            if held is not None:
                self.slots.give_back()
                self.metrics.held.labels(*held).dec()

    async def _send(self, url: str, body: bytes) -> httpx.Response:
        self.in_flight[url] += 1
        started = time.monotonic()
        try:
            return await self.upstream.generate(url, body)
        finally:
            self.metrics.upstream_seconds.observe(time.monotonic() - started)
            self.in_flight[url] -= 1
            if not self.in_flight[url]:
                del self.in_flight[url]

    async def _signal(self, resource: Resource) -> None:
        assert self._signal_demand is not None
        try:
            await self._signal_demand(resource)
        except Exception:  # noqa: BLE001 - logged; the next hold tick signals again
            logger.exception("could not signal demand for %s/%s", resource.namespace, resource.name)
