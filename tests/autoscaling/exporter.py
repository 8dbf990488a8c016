"""A real metrics endpoint standing in for a runtime pod: the runtime's own metric
definitions (imagefleet_runtime.metrics), served over HTTP by prometheus_client for
a real Prometheus to scrape."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from imagefleet.dev.processes import HOST
from imagefleet_runtime.metrics import Metrics


class Exporter:
    """One fake pod's /metrics on a free loopback port; `close()` stops serving."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.queue_depth = self.metrics.queue_depth
        self.latency = self.metrics.request_duration
        self.batch_duration = self.metrics.batch_duration
        server, self._thread = start_http_server(0, addr=HOST, registry=self.metrics.registry)
        self._server: WSGIServer = server
        self.address = f"{HOST}:{server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
