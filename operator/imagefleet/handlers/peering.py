"""Whether this replica is kopf's active peer: the autoscaling and measured-memory rounds run only then.

With peering (IMAGEFLEET_PEERING), kopf pauses the operator's watch streams,
handlers and daemons while a live peer of the same peering name has a higher
priority. The round tasks are started at start-up, which kopf does not pause, so
each round asks `active` first. It reads the peering objects kopf decides from,
by kopf's rule (a peer is live until `lastseen + lifetime`), through indexes
whose watch streams kopf pauses with the rest of the operator: while paused they
keep showing the peer that paused this replica, and the re-listing on resuming
brings them up to date. Standalone, kopf never pauses, neither do the rounds, and
nothing here is registered (`register` is called by `imagefleet run` only with peering).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

logger = logging.getLogger(__name__)

PEERING_GROUP = "kopf.dev"
DEFAULT_LIFETIME_SECONDS = 60
# The kopf index of the peering objects, registered by `register` (its name is the handlers' kwarg).
PEERINGS_INDEX = "peerings"


def register(cluster_wide: bool) -> None:
    """Index the peering objects of the operator's scope. Only with peering: the chart grants list
    and watch on them only then, and a standalone operator must not watch what it may not read."""
    plural = "clusterkopfpeerings" if cluster_wide else "kopfpeerings"
    kopf.index(PEERING_GROUP, "v1", plural, id=PEERINGS_INDEX)(_peering_status)


async def _peering_status(name: str, status: kopf.Status, **_: Any) -> dict[str, dict[str, Any]]:
    """Each peering object's peers (kopf keeps them in its status), by peering name: one cluster-wide
    object, or one per watched namespace."""
    return {name: dict(status)}


def active(peers: Iterable[Mapping[str, Any]], priority: int, now: datetime) -> bool:
    """Whether no live peer in these peering statuses has a higher priority than ours.

    A peer of the same priority is taken as this replica itself: each replica draws
    a random 31-bit priority at start-up, so two that collide are not told apart.
    """
    for status in peers:
        for peer in status.values():
            if not isinstance(peer, Mapping) or int(peer.get("priority", 0)) <= priority:
                continue
            lastseen = peer.get("lastseen")
            lifetime = timedelta(seconds=int(peer.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
            if lastseen is None or datetime.fromisoformat(lastseen) + lifetime > now:
                return False
    return True


def statuses(name: str, index: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The statuses of the peering objects called `name` in the peerings index."""
    return list(index.get(name, ()))


def this_replica_active(settings: kopf.OperatorSettings, indexes: Mapping[str, Any]) -> bool:
    """Whether rounds started at start-up should run now: always standalone, else only on the active peer.

    `indexes` are a start-up handler's keyword arguments (the peerings index is one of them with peering).
    Read at every round: the peering settings are applied by another start-up handler.
    """
    if settings.peering.standalone:
        return True
    peers = statuses(settings.peering.name, indexes[PEERINGS_INDEX])
    return active(peers, settings.peering.priority, datetime.now(UTC))


def start_rounds(what: str, settings: kopf.OperatorSettings, indexes: Mapping[str, Any],
                 next_round_in: Callable[[], float], one_round: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
    """A task that forever waits `next_round_in()` seconds, then runs `one_round()` if this replica is the
    active peer; a round that fails is logged and the next one runs."""

    async def rounds() -> None:
        while True:
            await asyncio.sleep(next_round_in())
            if not this_replica_active(settings, indexes):
                continue
            try:
                await one_round()
            except Exception:  # noqa: BLE001 - a bug in one round must not end the rounds
                logger.exception("a round of %s failed", what)

    return asyncio.create_task(rounds(), name=f"imagefleet {what}")
