"""Make kopf watch a resource whose CRD is installed while the operator runs, even when discovery lags.

kopf reads the API group's discovery on each event of a CustomResourceDefinition and watches what
it finds there. The CRD's last event (Established) can reach it before the API server's discovery
serves the new resource (2–25 ms later on an idle control plane here; kopf's observer alone missed
InferencePools in 3 of 20 installs of their CRD, docs/gateway.md). kopf then finds nothing new and
watches nothing until the next event of a CRD of that group or a restart: the operator would create
InferencePools and never see them change. So on the CRD's events the operator hands the event to
kopf's own discovery step again, until kopf watches the resource.

That step is kopf's private API (`kopf._core.reactor.observation`); tests/operator/test_routing_cluster.py
runs it against a real API server, so a kopf release that changes it fails there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from kopf._cogs.structs.references import Insights
from kopf._core.reactor.observation import process_discovered_resource_event

DISCOVERY_TIMEOUT_SECONDS = 60.0
DISCOVERY_INTERVAL_SECONDS = 0.5


def watched(insights: Insights, group: str, plural: str) -> bool:
    """Whether kopf has the resource among those it watches."""
    return any(resource.group == group and resource.plural == plural for resource in insights.watched_resources)


async def until_watched(
    is_watched: Callable[[], bool], rescan: Callable[[], Awaitable[None]], *,
    timeout: float = DISCOVERY_TIMEOUT_SECONDS, interval: float = DISCOVERY_INTERVAL_SECONDS,
) -> int | None:
    """Rescan until `is_watched()`: the number of rescans it took, or None when `timeout` passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rescans = 0
    while not is_watched():
        if rescans and loop.time() >= deadline:
            return None
        if rescans:
            await asyncio.sleep(interval)
        await rescan()
        rescans += 1
    return rescans


async def watch_when_served(crd: Mapping[str, Any], memo: kopf.Memo) -> int | None:
    """Until kopf watches the CRD's resource, hand the CRD's event to kopf's discovery step again
    (see the module's docstring); the number of rescans it took, or None after the timeout."""
    insights: Insights = memo.kopf_insights
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]

    async def rescan() -> None:
        await process_discovered_resource_event(
            raw_event={"type": "MODIFIED", "object": dict(crd)},
            settings=memo.kopf_settings, registry=kopf.get_default_registry(), insights=insights,
        )

    return await until_watched(lambda: watched(insights, group, plural), rescan)
