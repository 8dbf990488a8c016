"""What to do with a request once routed: send it to a pod, hold it until a pod is ready, or shed it.

- Send: the first stage of the route with a usable pod (stage > 0 is an overflow).
- Hold: some resource of the route has no ready pod yet (scaled to zero, starting) or a pod is
  not polled yet; capacity is coming, so the request waits (bounded in count and time), and the
  resources without a pod are signalled as demand (at most once per second each).
- Shed: every pod of every stage is ready, polled and saturated: 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .fleet import Resource, ResourceKey
from .picking import Candidate, Picker, fresh, usable
from .routing import Route

DEMAND_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class Send:
    candidate: Candidate
    overflowed: bool


@dataclass(frozen=True)
class Hold:
    cold: tuple[Resource, ...]  # resources of the route with no ready pod: the demand to signal


@dataclass(frozen=True)
class ShedAll:
    retry_after: float


Decision = Send | Hold | ShedAll


def decide(route: Route, candidates: Mapping[ResourceKey, Sequence[Candidate]], now: float, picker: Picker) -> Decision:
    for index, stage in enumerate(route.stages):
        ready = usable([c for resource in stage for c in candidates.get(resource.key, ())], now)
        if ready:
            return Send(picker.pick(ready), overflowed=index > 0)
    members = [resource for stage in route.stages for resource in stage]
    cold = tuple(r for r in members if not candidates.get(r.key))
    warming = any(c.load is None or (fresh(c, now) and not c.load.ready)
                  for r in members for c in candidates.get(r.key, ()))
    if cold or warming:
        return Hold(cold)
    waits = [c.predicted_wait() for r in members for c in candidates.get(r.key, ()) if fresh(c, now)]
    return ShedAll(retry_after=min(waits, default=1.0))


class DemandPacer:
    """At most one demand signal per resource per interval."""

    def __init__(self, interval: float = DEMAND_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._last: dict[ResourceKey, float] = {}

    def due(self, key: ResourceKey, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        return True


class Changes:
    """Wakes every held request when the fleet or a pod's load changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after `timeout` seconds."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


class HoldSlots:
    """The bound on requests held at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def give_back(self) -> None:
        self.held -= 1
