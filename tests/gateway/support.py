"""A gateway served by uvicorn on loopback in a thread of the test process, its fleet fed directly
(the watch is tested against the real API server in test_watch_cluster.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import uvicorn

from imagefleet.gateway.app import create_app, create_metrics_app
from imagefleet.gateway.auth import KeyRing
from imagefleet.servers import CompanionServer, serve
from imagefleet.http_limits import HeaderTimeoutProtocol
from imagefleet.gateway.fleet import Resource
from imagefleet.gateway.service import Gateway, Settings
from tests.helpers import wait_until
from tests.runtime.support import free_port, sample

T = TypeVar("T")


@dataclass
class RunningGateway:
    gateway: Gateway
    base_url: str
    metrics_url: str
    loop: asyncio.AbstractEventLoop
    server: uvicorn.Server
    demand: list[tuple[str, float]] = field(default_factory=list)  # (resource name, loop time) per signal

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the gateway's event loop (its state belongs to that thread)."""
        return asyncio.run_coroutine_threadsafe(_call(function), self.loop).result(timeout=10)

    def set_resource(self, name: str, *, tier: str = "standard", group: str | None = None,
                     overflow_to: str | None = None, namespace: str = "ns", **spec: Any) -> None:
        routing = {k: v for k, v in (("group", group), ("overflowTo", overflow_to)) if v}
        obj = {"metadata": {"namespace": namespace, "name": name},
               "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": tier, "routing": routing, **spec}}
        self.call(lambda: self.gateway.fleet.apply_resource("ADDED", obj) and self.gateway.fleet_changed())

    def set_endpoints(self, service: str, urls: list[str], namespace: str = "ns") -> None:
        """The service's ready endpoints, one EndpointSlice per pod (the pods listen on different ports)."""
        for index, url in enumerate(urls):
            host, port = url.split("//")[1].rsplit(":", 1)
            obj = {"metadata": {"namespace": namespace, "name": f"{service}-{index}",
                                "labels": {"kubernetes.io/service-name": service}},
                   "ports": [{"name": "http", "port": int(port)}],
                   "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]}
            self.call(lambda obj=obj: self.gateway.fleet.apply_slice("ADDED", obj) and self.gateway.fleet_changed())

    def metric(self, name: str, **labels: str) -> float:
        return sample(httpx.get(f"{self.metrics_url}/metrics", timeout=10).text, name, **labels)

    def wait_polled(self, urls: list[str]) -> None:
        wait_until(lambda: all(self.gateway.loads.get(u) is not None and self.gateway.loads[u].ready for u in urls),
                   timeout=10, interval=0.05, message=f"first load polls of {urls}")


async def _call(function: Callable[[], T]) -> T:
    return function()


@contextmanager
def running_gateway(settings: Settings = Settings(poll_interval_seconds=0.1), *, keys: KeyRing | None = None,
                    header_timeout: float = 10.0, body_timeout: float = 10.0) -> Iterator[RunningGateway]:
    port, metrics_port = free_port(), free_port()
    demand: list[tuple[str, float]] = []

    async def record(resource: Resource) -> None:
        demand.append((resource.name, asyncio.get_running_loop().time()))

    gateway = Gateway(settings, signal_demand=record, keys=keys)
    app = create_app(gateway, body_timeout=body_timeout)
    protocol = type("TestHeaderTimeout", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="warning",
                                           timeout_keep_alive=5))
    metrics = CompanionServer(uvicorn.Config(create_metrics_app(gateway), host="127.0.0.1", port=metrics_port,
                                             log_level="warning", lifespan="off"))
    loops: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(serve(server, metrics))

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    wait_until(lambda: server.started and metrics.started, timeout=30, interval=0.05,
               message="the gateway to listen")
    running = RunningGateway(gateway, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", loops[0],
                             server, demand)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=30)

