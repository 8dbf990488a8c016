"""A resource's ready endpoints, read from the EndpointSlices of its Service (as a client in
the cluster would reach its pods), handed out in turn."""

from __future__ import annotations

import itertools
import threading
import time

from kubernetes import client

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REFRESH_SECONDS = 1.0


def ready_endpoints(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """Base URLs (http://IP:port) of the Service's ready endpoints, sorted."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
    )
    urls = set()
    for endpoint_slice in slices.items:
        ports = [port.port for port in endpoint_slice.ports or [] if port.port is not None]
        for endpoint in endpoint_slice.endpoints or []:
            if endpoint.conditions is None or endpoint.conditions.ready is False:
                continue
            urls.update(f"http://{address}:{port}" for address in endpoint.addresses for port in ports)
    return sorted(urls)


class Rotation:
    """Round robin over a Service's ready endpoints, refreshed at most every REFRESH_SECONDS.

    Callable from any thread; raises LookupError while the Service has no ready endpoint.
    """

    def __init__(self, api: client.ApiClient, namespace: str, service: str) -> None:
        self.api, self.namespace, self.service = api, namespace, service
        self._lock = threading.Lock()
        self._urls: list[str] = []
        self._cycle: itertools.cycle[str] = itertools.cycle(())
        self._read_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_SECONDS:
                self._read_at = time.monotonic()
                urls = ready_endpoints(self.api, self.namespace, self.service)
                if urls != self._urls:
                    self._urls, self._cycle = urls, itertools.cycle(urls)
            if not self._urls:
                raise LookupError(f"service {self.namespace}/{self.service} has no ready endpoint")
            return next(self._cycle)

    @property
    def count(self) -> int:
        return len(self._urls)
