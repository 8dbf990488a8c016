"""The gateway's view of the fleet: resources and their ready endpoints, kept current by watch events.

Everything here is plain data and pure updates; the watches (`watch.py`) call `apply_*` and the
request path only reads. A runtime Service is named after its resource, so an EndpointSlice
belongs to the resource its `kubernetes.io/service-name` label names; a pool member
(`spec.pool`) has no Service of its own and is served by its pool's, `<pool>-pool`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..builders.labels import RUNTIME_PORT_NAME
from ..catalog import emulation_table
from ..crd.models import ImageModelDeploymentSpec, Tier
from ..pool.routing import SwapPrices, Want, swap_prices
from ..residency import adapter_key, checkpoint_key, checkpoint_mib, swap_cost
from ..resolve import Generation, catalog_model, effective_generation, effective_precision
from ..tiers import effective_autoscaling
from .pricing import Pricing, pricing_of

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

ResourceKey = tuple[str, str]  # (namespace, name)
GroupKey = tuple[str, str]  # (namespace, group)
POOL_SERVICE_SUFFIX = "-pool"


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter of a pool member (spec.model.adapter)."""

    name: str
    weight_name: str | None
    scale: float

    @property
    def key(self) -> str:
        """The name a pool pod's residency knows it by (its `/v1/load` `resident.adapters`)."""
        return adapter_key(self.name, self.weight_name)


@dataclass(frozen=True)
class PoolMember:
    """What routing by residency needs of a resource that runs on a pool (spec.pool)."""

    pool: str
    checkpoint: str  # spec.model.name: a catalog name or a Hugging Face repo id
    revision: str | None  # spec.model.revision
    adapters: tuple[AdapterRef, ...]
    checkpoint_mib: float | None  # None: the catalog does not know the family
    prices: SwapPrices | None  # None: no swap figures for the family on the class

    @property
    def service(self) -> str:
        return self.pool + POOL_SERVICE_SUFFIX

    @property
    def checkpoint_key(self) -> str:
        """The name a pool pod's residency knows the checkpoint by (with its revision, when pinned)."""
        return checkpoint_key(self.checkpoint, self.revision)

    @property
    def want(self) -> Want:
        return Want(self.checkpoint_key, tuple(adapter.key for adapter in self.adapters))

    def wire(self) -> dict[str, Any]:
        """The fields the gateway sets in the body it sends to a pool pod (images_api.GenerationRequest)."""
        return {
            "checkpoint": {"name": self.checkpoint, "revision": self.revision},
            "adapters": [{"name": a.name, "weight_name": a.weight_name, "scale": a.scale} for a in self.adapters],
        }


@dataclass(frozen=True)
class Resource:
    """What routing needs of one ImageModelDeployment."""

    namespace: str
    name: str
    group: str
    tier: Tier
    overflow_to: str | None
    target_p95_seconds: float
    # What a request costs on the resource's card (None: the catalog has no figures for its model).
    pricing: Pricing | None = None
    pool: PoolMember | None = None
    # The spec.generation limits its pods enforce (most steps, largest size), checked before holding.
    generation: Generation | None = None

    @property
    def key(self) -> ResourceKey:
        return (self.namespace, self.name)

    @property
    def service_key(self) -> ResourceKey:
        """The Service whose endpoints serve it: its own, or its pool's."""
        return (self.namespace, self.pool.service if self.pool else self.name)


def upstream_body(resource: Resource, body: bytes) -> bytes:
    """The body sent to the pod: for a pool member, with the checkpoint and adapters it runs on."""
    if resource.pool is None:
        return body
    return json.dumps({**json.loads(body), **resource.pool.wire()}).encode()


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
        pricing=pricing_of(spec),
        pool=pool_member(spec),
        generation=effective_generation(spec.generation, catalog_model(spec)),
    )


def pool_member(spec: ImageModelDeploymentSpec) -> PoolMember | None:
    """The pool side of a member (`spec.pool`, `spec.model.adapter`); None for other resources."""
    if spec.pool is None:
        return None
    adapter = spec.model.adapter
    adapters = (AdapterRef(adapter.name, adapter.weight_name, adapter.scale),) if adapter is not None else ()
    family = catalog_model(spec)
    mib = prices = None
    if family is not None:
        mib = checkpoint_mib(family, effective_precision(spec, family))
        try:
            cost = swap_cost(spec.gpu_class)
        except KeyError:
            cost = None
        figures = emulation_table().models.get(family.name)
        if cost is not None and figures is not None:
            prices = swap_prices(cost, mib, figures.adapter_mib or 0.0)
    return PoolMember(spec.pool, spec.model.name, spec.model.revision, adapters, mib, prices)


def ready_urls_from_slice(obj: dict[str, Any]) -> tuple[str, ...]:
    """Base URLs of the ready endpoints of one EndpointSlice (`ready` unset counts as ready, as the API says)."""
    return _urls_from_slice(obj, ready=True)


def starting_urls_from_slice(obj: dict[str, Any]) -> tuple[str, ...]:
    """Base URLs of the endpoints that are not ready and not terminating: pods still starting."""
    return _urls_from_slice(obj, ready=False)


def _urls_from_slice(obj: dict[str, Any], *, ready: bool) -> tuple[str, ...]:
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == RUNTIME_PORT_NAME), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return ()
    urls = []
    for endpoint in obj.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        is_ready = conditions.get("ready") is not False
        if is_ready != ready or not endpoint.get("addresses") or (not ready and conditions.get("terminating")):
            continue
        address = endpoint["addresses"][0]
        host = f"[{address}]" if ":" in address else address
        urls.append(f"http://{host}:{port}")
    return tuple(sorted(urls))


# Until a resource's first pod has been seen starting and then ready, a starting pod is expected
# to serve this long after it was first seen (the autoscaler's own default start-up time).
DEFAULT_STARTUP_SECONDS = 60.0


@dataclass
class Fleet:
    """Resources by key and ready endpoint URLs by EndpointSlice."""

    resources: dict[ResourceKey, Resource] = field(default_factory=dict)
    # (namespace, slice name) -> (service name, ready URLs)
    slices: dict[ResourceKey, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # (namespace, slice name) -> (service name, starting URLs)
    starting_slices: dict[ResourceKey, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # Starting URL -> when it was first seen starting (monotonic seconds).
    first_seen: dict[str, float] = field(default_factory=dict)
    # (namespace, service) -> the last start-up seen: first seen starting until ready, in seconds.
    startup_seconds: dict[ResourceKey, float] = field(default_factory=dict)
    # (namespace, service) -> ready URLs; rebuilt on the first read after a slice changed.
    _by_service: dict[ResourceKey, tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def apply_resource(self, event_type: str, obj: dict[str, Any]) -> set[GroupKey]:
        """Apply a watch event of an ImageModelDeployment; the model groups whose routing changed
        (the resource's group before and after; none when its routing view is the same)."""
        metadata = obj["metadata"]
        key = (metadata["namespace"], metadata["name"])
        resource = None if event_type == "DELETED" else resource_from_object(obj)
        before = self.resources.get(key)
        if before == resource:
            return set()
        if resource is None:
            self.resources.pop(key, None)
        else:
            self.resources[key] = resource
        return {(r.namespace, r.group) for r in (before, resource) if r is not None}

    def apply_slice(self, event_type: str, obj: dict[str, Any]) -> set[GroupKey]:
        """Apply a watch event of an EndpointSlice; the model groups of the resources its Service
        serves when some ready endpoint came or went (none otherwise)."""
        metadata = obj["metadata"]
        key = (metadata["namespace"], metadata["name"])
        service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        entry = None if event_type == "DELETED" or service is None else (service, ready_urls_from_slice(obj))
        self._track_starting(key, service, () if entry is None else starting_urls_from_slice(obj),
                             () if entry is None else entry[1])
        before = self.slices.get(key)
        if before == entry:
            return set()
        if entry is None:
            self.slices.pop(key, None)
        else:
            self.slices[key] = entry
        self._by_service = None
        services = {(key[0], service) for service, _ in (e for e in (before, entry) if e is not None)}
        return {(r.namespace, r.group) for r in self.resources.values() if r.service_key in services}

    def _track_starting(self, key: ResourceKey, service: str | None, starting: tuple[str, ...],
                        ready: tuple[str, ...]) -> None:
        """Remember when each starting pod was first seen; learn the start-up time when one turns ready."""
        now = self.clock()
        for url in ready:
            seen = self.first_seen.pop(url, None)
            if seen is not None and service is not None:
                self.startup_seconds[(key[0], service)] = now - seen
        _, previous = self.starting_slices.pop(key, ("", ()))
        for url in set(previous) - set(starting) - set(ready):
            self.first_seen.pop(url, None)
        if starting and service is not None:
            self.starting_slices[key] = (service, starting)
            for url in starting:
                self.first_seen.setdefault(url, now)

    def starting(self, resource: Resource) -> tuple[float, ...]:
        """Seconds from now until each starting pod of the resource is expected to serve (0: overdue)."""
        now = self.clock()
        startup = self.startup_seconds.get(resource.service_key, DEFAULT_STARTUP_SECONDS)
        return tuple(sorted(
            max(0.0, self.first_seen.get(url, now) + startup - now)
            for (namespace, _), (service, urls) in self.starting_slices.items()
            if (namespace, service) == resource.service_key
            for url in urls
        ))

    def replace(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        """Start over from a full list of `kind` ("resources" or "slices") in `namespace` (None: all),
        after a watch had to list again."""
        table: dict[ResourceKey, Any] = self.resources if kind == "resources" else self.slices
        for key in [key for key in table if namespace is None or key[0] == namespace]:
            del table[key]
            if kind == "slices":
                self.starting_slices.pop(key, None)
        apply = self.apply_resource if kind == "resources" else self.apply_slice
        for obj in items:
            apply("ADDED", obj)
        self._by_service = None

    def endpoints(self, resource: Resource) -> tuple[str, ...]:
        """Ready endpoint URLs of a resource's Service (its pool's for a member), over all its slices."""
        if self._by_service is None:
            grouped: dict[ResourceKey, set[str]] = {}
            for (namespace, _), (service, ready) in self.slices.items():
                grouped.setdefault((namespace, service), set()).update(ready)
            self._by_service = {key: tuple(sorted(urls)) for key, urls in grouped.items()}
        return self._by_service.get(resource.service_key, ())

    def all_endpoints(self) -> set[str]:
        """Every ready URL of every known resource (what the load poller polls)."""
        return {url for resource in self.resources.values() for url in self.endpoints(resource)}
