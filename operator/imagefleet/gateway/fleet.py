"""The gateway's view of the fleet: resources and their ready endpoints, kept current by watch events.

Everything here is plain data and pure updates; the watches (`watch.py`) call `apply_*` and the
request path only reads. A runtime Service is named after its resource, so an EndpointSlice
belongs to the resource its `kubernetes.io/service-name` label names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..crd.models import ImageModelDeploymentSpec, Tier
from ..tiers import effective_autoscaling

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
RUNTIME_PORT_NAME = "http"

ResourceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Resource:
    """What routing needs of one ImageModelDeployment."""

    namespace: str
    name: str
    group: str
    tier: Tier
    overflow_to: str | None
    target_p95_seconds: float

    @property
    def key(self) -> ResourceKey:
        return (self.namespace, self.name)


def resource_from_object(obj: dict[str, Any]) -> Resource | None:
    """The routing view of an ImageModelDeployment; None when its spec does not parse (the API server
    validated it, so only an object of a newer schema could fail, and the gateway then skips it)."""
    metadata = obj["metadata"]
    try:
        spec = ImageModelDeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return None
    routing = spec.routing
    return Resource(
        namespace=metadata["namespace"],
        name=metadata["name"],
        group=(routing.group if routing and routing.group else metadata["name"]),
        tier=spec.tier,
        overflow_to=routing.overflow_to if routing else None,
        target_p95_seconds=effective_autoscaling(spec).target_p95_seconds,
    )


def ready_urls_from_slice(obj: dict[str, Any]) -> tuple[str, ...]:
    """Base URLs of the ready endpoints of one EndpointSlice (`ready` unset counts as ready, as the API says)."""
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == RUNTIME_PORT_NAME), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return ()
    urls = []
    for endpoint in obj.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False or not endpoint.get("addresses"):
            continue
        address = endpoint["addresses"][0]
        host = f"[{address}]" if ":" in address else address
        urls.append(f"http://{host}:{port}")
    return tuple(sorted(urls))


@dataclass
class Fleet:
    """Resources by key and ready endpoint URLs by EndpointSlice."""

    resources: dict[ResourceKey, Resource] = field(default_factory=dict)
    # (namespace, slice name) -> (service name, ready URLs)
    slices: dict[ResourceKey, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # (namespace, service) -> ready URLs; rebuilt on the first read after a slice changed.
    _by_service: dict[ResourceKey, tuple[str, ...]] | None = field(default=None, repr=False, compare=False)

    def apply_resource(self, event_type: str, obj: dict[str, Any]) -> bool:
        """Apply a watch event of an ImageModelDeployment; True when the routing view changed."""
        metadata = obj["metadata"]
        key = (metadata["namespace"], metadata["name"])
        resource = None if event_type == "DELETED" else resource_from_object(obj)
        if self.resources.get(key) == resource:
            return False
        if resource is None:
            self.resources.pop(key, None)
        else:
            self.resources[key] = resource
        return True

    def apply_slice(self, event_type: str, obj: dict[str, Any]) -> bool:
        """Apply a watch event of an EndpointSlice; True when some ready endpoint came or went."""
        metadata = obj["metadata"]
        key = (metadata["namespace"], metadata["name"])
        service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        entry = None if event_type == "DELETED" or service is None else (service, ready_urls_from_slice(obj))
        if self.slices.get(key) == entry:
            return False
        if entry is None:
            self.slices.pop(key, None)
        else:
            self.slices[key] = entry
        self._by_service = None
        return True

    def replace(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        """Start over from a full list of `kind` ("resources" or "slices") in `namespace` (None: all),
        after a watch had to list again."""
        table: dict[ResourceKey, Any] = self.resources if kind == "resources" else self.slices
        for key in [key for key in table if namespace is None or key[0] == namespace]:
            del table[key]
        apply = self.apply_resource if kind == "resources" else self.apply_slice
        for obj in items:
            apply("ADDED", obj)
        self._by_service = None

    def endpoints(self, resource: Resource) -> tuple[str, ...]:
        """Ready endpoint URLs of a resource's Service, over all its slices."""
        if self._by_service is None:
            grouped: dict[ResourceKey, set[str]] = {}
            for (namespace, _), (service, ready) in self.slices.items():
                grouped.setdefault((namespace, service), set()).update(ready)
            self._by_service = {key: tuple(sorted(urls)) for key, urls in grouped.items()}
        return self._by_service.get(resource.key, ())

    def all_endpoints(self) -> set[str]:
        """Every ready URL of every known resource (what the load poller polls)."""
        return {url for resource in self.resources.values() for url in self.endpoints(resource)}
