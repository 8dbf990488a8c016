"""A resource's ready endpoints, read from the EndpointSlices of its Service (as a client in
the cluster reaches its pods), and a client-side picker over them."""

from __future__ import annotations

import itertools
import threading
import time

from kubernetes import client

from ..builders.labels import RUNTIME_PORT_NAME

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REFRESH_SECONDS = 1.0


def ready_endpoints(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """Base URLs (http://IP:port) of the Service's ready endpoints on its generation port, sorted."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
    )
    urls = set()
    for endpoint_slice in slices.items:
        ports = [port.port for port in endpoint_slice.ports or []
                 if port.port is not None and port.name == RUNTIME_PORT_NAME]
        for endpoint in endpoint_slice.endpoints or []:
            if endpoint.conditions is None or endpoint.conditions.ready is False:
                continue
            urls.update(f"http://{address}:{port}" for address in endpoint.addresses for port in ports)
    return sorted(urls)


class Endpoints:
    """The fewest-requests-in-flight endpoint of a Service (ties in turn), as a client-side
    load balancer such as Envoy's LEAST_REQUEST picks; the ready set is reread at most every
    REFRESH_SECONDS. Thread-safe; `pick` raises LookupError while no endpoint is ready.
    """

    def __init__(self, api: client.ApiClient, namespace: str, service: str) -> None:
        self.api, self.namespace, self.service = api, namespace, service
        self._lock = threading.Lock()
        self._urls: list[str] = []
        self._in_flight: dict[str, int] = {}
        self._turn = itertools.count()
        self._read_at = 0.0

    def any_ready(self) -> bool:
        """Whether the Service has a ready endpoint (reread at most every REFRESH_SECONDS)."""
        with self._lock:
            self._refresh()
            return bool(self._urls)

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            self._read_at = time.monotonic()
            self._urls = ready_endpoints(self.api, self.namespace, self.service)

    def pick(self) -> str:
        with self._lock:
            self._refresh()
            if not self._urls:
                raise LookupError(f"service {self.namespace}/{self.service} has no ready endpoint")
            fewest = min(self._in_flight.get(url, 0) for url in self._urls)
            candidates = [url for url in self._urls if self._in_flight.get(url, 0) == fewest]
            url = candidates[next(self._turn) % len(candidates)]
            self._in_flight[url] = self._in_flight.get(url, 0) + 1
            return url

    def release(self, url: str) -> None:
        """The request sent to `url` has been answered (or failed)."""
        with self._lock:
            self._in_flight[url] -= 1

    @property
    def count(self) -> int:
        """Ready endpoints at the last read."""
        return len(self._urls)
