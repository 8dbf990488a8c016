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
from collections.abc import Callable
from datetime import UTC, datetime
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
    """Two list+watch loops (resources, EndpointSlices) in threads; `synced` once both listed."""

    def __init__(self, gateway: Gateway, kube: Kube, namespace: str | None) -> None:
        self._gateway = gateway
        self._kube = kube
        self._namespace = namespace
        self._stopping = threading.Event()
        self._listed: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def synced(self) -> bool:
        return self._listed == {"resources", "slices"}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        custom = client.CustomObjectsApi(self._kube.api_client)
        discovery = client.DiscoveryV1Api(self._kube.api_client)
        if self._namespace:
            list_resources: Callable[..., Any] = lambda **kw: custom.list_namespaced_custom_object(  # noqa: E731
                GROUP, VERSION, self._namespace, PLURAL, **kw)
            list_slices: Callable[..., Any] = lambda **kw: discovery.list_namespaced_endpoint_slice(  # noqa: E731
                self._namespace, label_selector=SERVICE_NAME_LABEL, **kw)
        else:
            list_resources = lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)  # noqa: E731
            list_slices = lambda **kw: discovery.list_endpoint_slice_for_all_namespaces(  # noqa: E731
                label_selector=SERVICE_NAME_LABEL, **kw)
        for kind, lister in (("resources", list_resources), ("slices", list_slices)):
            threading.Thread(target=self._run, args=(kind, lister), name=f"watch-{kind}", daemon=True).start()

    async def stop(self) -> None:
        self._stopping.set()

    def _run(self, kind: str, lister: Callable[..., Any]) -> None:
        while not self._stopping.is_set():
            try:
                raw = lister(_preload_content=False)
                listing = json.loads(raw.data)
                self._post(self._replace, kind, listing.get("items") or [])
                version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(lister, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                              allow_watch_bookmarks=True)
                for event in stream:
                    if self._stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._post(self._apply, kind, event["type"], event["raw_object"])
            except Exception:  # noqa: BLE001 - logged, then listed again
                logger.exception("watch of %s failed; listing again", kind)
            self._stopping.wait(RELIST_BACKOFF_SECONDS)

    def _post(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(function, *args)

    def _replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        fleet = self._gateway.fleet
        if kind == "resources":
            fleet.replace(items, None)
        else:
            fleet.replace(None, items)
        self._listed.add(kind)
        self._gateway.fleet_changed()

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        fleet = self._gateway.fleet
        changed = fleet.apply_resource(event_type, obj) if kind == "resources" else fleet.apply_slice(event_type, obj)
        if changed:
            self._gateway.fleet_changed()


def demand_signaller(kube: Kube) -> Callable[[Resource], Any]:
    """Writes `imagefleet.io/demand-at` on a resource (a merge patch of one annotation)."""

    async def signal(resource: Resource) -> None:
        patch = {"metadata": {"annotations": {DEMAND_ANNOTATION: demand_timestamp(datetime.now(UTC))}}}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{resource.namespace}/{PLURAL}/{resource.name}"
        await kube.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    return signal
