"""The PromQL the autoscaler runs for one ImageModelDeployment, and reading it.

Series are tied to a resource by two labels, `namespace` and `imagefleet_io_name`:
what the usual annotation-scrape relabelling (`__meta_kubernetes_namespace` ->
`namespace`, labelmap of `__meta_kubernetes_pod_label_(.+)`) and a ServiceMonitor
with `podTargetLabels: [imagefleet.io/name]` both produce, and what the local
test Prometheus puts on its static targets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from imagefleet import metrics

from .prometheus import PrometheusClient

NAMESPACE_LABEL = "namespace"
NAME_LABEL = "imagefleet_io_name"


def selector(namespace: str, name: str) -> str:
    return f'{{{NAMESPACE_LABEL}="{_escape(namespace)}",{NAME_LABEL}="{_escape(name)}"}}'


def queue_depth_query(namespace: str, name: str) -> str:
    """Requests waiting, summed over the resource's pods."""
    return f"sum({metrics.QUEUE_DEPTH}{selector(namespace, name)})"


def queue_age_query(namespace: str, name: str) -> str:
    """Seconds since the newest queue-depth sample was scraped (staleness)."""
    return f"time() - max(timestamp({metrics.QUEUE_DEPTH}{selector(namespace, name)}))"


def p95_query(namespace: str, name: str, window_seconds: float) -> str:
    """p95 request latency over the window, from the histogram of all the resource's pods."""
    bucket = f"{metrics.REQUEST_DURATION_SECONDS}_bucket{selector(namespace, name)}"
    return f"histogram_quantile(0.95, sum by (le) (rate({bucket}[{round(window_seconds)}s])))"


def busy_query(namespace: str, name: str, window_seconds: float) -> str:
    """Replicas busy in a batch on average: GPU-seconds of pipeline calls per second."""
    total = f"{metrics.BATCH_DURATION_SECONDS}_sum{selector(namespace, name)}"
    return f"sum(rate({total}[{round(window_seconds)}s]))"


@dataclass(frozen=True)
class Readings:
    """None means "no signal" (no series, or NaN), never zero."""

    queue_depth: float | None
    p95_seconds: float | None
    busy_replicas: float | None
    age_seconds: float | None


async def read(client: PrometheusClient, namespace: str, name: str, window_seconds: float) -> Readings:
    """Run the queries concurrently; PrometheusError propagates."""
    queue, p95, busy, age = await asyncio.gather(
        client.value(queue_depth_query(namespace, name)),
        client.value(p95_query(namespace, name, window_seconds)),
        client.value(busy_query(namespace, name, window_seconds)),
        client.value(queue_age_query(namespace, name)),
    )
    return Readings(queue_depth=queue, p95_seconds=p95, busy_replicas=busy, age_seconds=age)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
