"""Where the next request of a route goes: a pod with room for it now, or nowhere yet.

- Send: the first stage of the route with a usable pod (stage > 0 is an overflow).
- Wait: no pod has room now; the request stays in the gateway's queue (`queue.Lane`). The
  route's resources without a ready pod (scaled to zero, starting) are its `cold` ones: demand
  to signal, at most once per second each (`DemandPacer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .fleet import Resource, ResourceKey
from .picking import Candidate, Picker, usable
from .routing import Route

DEMAND_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class Send:
    candidate: Candidate
    overflowed: bool


def pick(route: Route, candidates: Mapping[ResourceKey, Sequence[Candidate]], now: float,
         picker: Picker) -> Send | None:
    """A pod of the earliest stage that has room, or None."""
    for index, stage in enumerate(route.stages):
        ready = usable([c for resource in stage for c in candidates.get(resource.key, ())], now)
        if ready:
            return Send(picker.pick(ready), overflowed=index > 0)
    return None


def cold(route: Route, candidates: Mapping[ResourceKey, Sequence[Candidate]]) -> tuple[Resource, ...]:
    """The route's first-choice resources without a ready pod: demand to signal even while an overflow serves."""
    return tuple(r for r in route.stages[0] if not candidates.get(r.key))


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


class HoldSlots:
    """The bound on requests waiting at once, over every route (the gateway's memory)."""

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
