"""The gateway's edge to the API server: list+watch of the ImageModelDeployments and of the
EndpointSlices (their Services'), feeding `Fleet`; and the demand annotation write.

Each watch runs in a thread of its own (the client is synchronous) and hands every event to the
event loop, which applies it to the cache: the request path never calls the API server. A watch
that ends or fails lists again (after a short backoff) and replaces its part of the cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes import client, watch

from .. import GROUP, PLURAL, VERSION
from ..kube import Kube
from .fleet import SERVICE_NAME_LABEL, Resource
from .service import Gateway

logger = logging.getLogger(__name__)

DEMAND_ANNOTATION = f"{GROUP}/demand-at"
WATCH_SECONDS = 300
RELIST_BACKOFF_SECONDS = 1.0


def demand_timestamp(now: datetime) -> str:
    """RFC 3339 UTC with fractional seconds, e.g. 2026-11-29T08:00:00.123456Z."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FleetWatch:
    """List+watch loops (resources, EndpointSlices) in threads, per namespace or cluster-wide;
    `synced` once each has listed."""

    def __init__(self, gateway: Gateway, kube: Kube, namespaces: Sequence[str] = ()) -> None:
        self._gateway = gateway
        self._kube = kube
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._stopping = threading.Event()
        self._listed: set[tuple[str, str | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def synced(self) -> bool:
        return len(self._listed) == 2 * len(self._scopes)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for namespace in self._scopes:
            for kind in ("resources", "slices"):
                threading.Thread(target=self._run, args=(kind, namespace, self._lister(kind, namespace)),
                                 name=f"watch-{kind}-{namespace or 'all'}", daemon=True).start()

    async def stop(self) -> None:
        self._stopping.set()

    def _lister(self, kind: str, namespace: str | None) -> Callable[..., Any]:
        custom = client.CustomObjectsApi(self._kube.api_client)
        discovery = client.DiscoveryV1Api(self._kube.api_client)
        if kind == "resources":
            if namespace:
                return partial(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
            return partial(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        if namespace:
            return partial(discovery.list_namespaced_endpoint_slice, namespace, label_selector=SERVICE_NAME_LABEL)
        return partial(discovery.list_endpoint_slice_for_all_namespaces, label_selector=SERVICE_NAME_LABEL)

    def _run(self, kind: str, namespace: str | None, lister: Callable[..., Any]) -> None:
        while not self._stopping.is_set():
            try:
                listing = json.loads(lister(_preload_content=False).data)
                self._post(self._replace, kind, namespace, listing.get("items") or [])
                version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(lister, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                              allow_watch_bookmarks=True)
                for event in stream:
                    if self._stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._post(self._apply, kind, event["type"], event["raw_object"])
            except Exception:  # noqa: BLE001 - logged, then listed again
                if self._stopping.is_set():
                    return
                logger.exception("watch of %s in %s failed; listing again", kind, namespace or "all namespaces")
            self._stopping.wait(RELIST_BACKOFF_SECONDS)

    def _post(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(function, *args)

    def _replace(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        self._gateway.fleet.replace(kind, namespace, items)
        self._listed.add((kind, namespace))
        self._gateway.fleet_changed()

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        fleet = self._gateway.fleet
        changed = fleet.apply_resource(event_type, obj) if kind == "resources" else fleet.apply_slice(event_type, obj)
        if changed:
            self._gateway.fleet_changed(changed)


def demand_signaller(kube: Kube) -> Callable[[Resource], Any]:
    """Writes `imagefleet.io/demand-at` on a resource (a merge patch of one annotation)."""

    async def signal(resource: Resource) -> None:
        patch = {"metadata": {"annotations": {DEMAND_ANNOTATION: demand_timestamp(datetime.now(UTC))}}}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{resource.namespace}/{PLURAL}/{resource.name}"
        await kube.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    return signal
