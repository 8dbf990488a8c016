"""A real metrics endpoint standing in for a runtime pod: the runtime's metric names,
served over HTTP by prometheus_client for a real Prometheus to scrape."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from imagefleet import metrics
from imagefleet.dev.processes import HOST


class Exporter:
    """One fake pod's /metrics on a free loopback port; `close()` stops serving."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(metrics.QUEUE_DEPTH, "requests waiting", registry=self.registry)
        self.latency = Histogram(
            metrics.REQUEST_DURATION_SECONDS,
            "arrival to response",
            buckets=metrics.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            metrics.BATCH_DURATION_SECONDS,
            "one pipeline call",
            buckets=metrics.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        server, self._thread = start_http_server(0, addr=HOST, registry=self.registry)
        self._server: WSGIServer = server
        self.address = f"{HOST}:{server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
