"""How the autoscaler's PromQL ties series to an ImageModelDeployment, and reading the answers.

Series are tied to a resource by two labels, `namespace` and `imagefleet_io_name`:
what the usual annotation-scrape relabelling (`__meta_kubernetes_namespace` ->
`namespace`, labelmap of `__meta_kubernetes_pod_label_(.+)`) and a ServiceMonitor
with `podTargetLabels: [imagefleet.io/name]` both produce, and what the local
test Prometheus puts on its static targets.

The queue depth is read per pod, with each pod's sample age, so staleness is
judged pod by pod and the number of pods reporting can be compared with the
ready replicas. The rate() queries run over a window of at least four scrape
intervals (read from Prometheus's targets), so they always hold two samples.
The queries themselves are batched, for every resource at once: see `batch`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imagefleet import metrics

from .prometheus import PrometheusQueryError, Sample

NAMESPACE_LABEL = "namespace"
NAME_LABEL = "imagefleet_io_name"
# rate() needs two samples in its window; fewer means the window is too short.
MIN_WINDOW_SAMPLES = 2

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def selector(namespace: str, name: str) -> str:
    return f'{{{NAMESPACE_LABEL}="{_escape(namespace)}",{NAME_LABEL}="{_escape(name)}"}}'


def queue_depth_query(namespace: str, name: str) -> str:
    """Requests waiting, summed over the resource's pods."""
    return f"sum({metrics.QUEUE_DEPTH}{selector(namespace, name)})"


def p95_query(namespace: str, name: str, window_seconds: float) -> str:
    """p95 request latency over the window, from the histogram of all the resource's pods."""
    bucket = f"{metrics.REQUEST_DURATION_SECONDS}_bucket{selector(namespace, name)}"
    return f"histogram_quantile(0.95, sum by (le) (rate({bucket}[{round(window_seconds)}s])))"


@dataclass(frozen=True)
class QueueReading:
    """The queue depth over the pods whose sample is fresh and a number."""

    total: float | None  # None: no pod reported
    fresh: int  # pods counted
    stale: int  # pods with an old sample, a NaN/Inf value or no known age
    newest_age_seconds: float | None


def queue_reading(values: Sequence[Sample], ages: Sequence[Sample], max_age_seconds: float) -> QueueReading:
    """Judge each pod's queue-depth series on its own: too old, NaN or Inf is no signal."""
    age_of = {_key(sample.labels): sample.value for sample in ages}
    total, fresh, stale = 0.0, 0, 0
    newest: float | None = None
    for sample in values:
        age = age_of.get(_key(sample.labels))
        if age is not None and math.isfinite(age):
            newest = age if newest is None else min(newest, age)
        if age is None or not math.isfinite(age) or age > max_age_seconds or not math.isfinite(sample.value):
            stale += 1
            continue
        total += sample.value
        fresh += 1
    return QueueReading(total if fresh else None, fresh, stale, newest)


@dataclass(frozen=True)
class Readings:
    """None means "no signal" (no series, or NaN), never zero."""

    queue_depth: float | None
    p95_seconds: float | None
    busy_replicas: float | None
    age_seconds: float | None
    queue_series: int | None = None
    stale_series: int = 0
    served_rate: float | None = None
    batch_seconds: float | None = None
    batch_size: float | None = None
    # The most samples a pod has in the rate window (None: no series).
    window_samples: float | None = None
    # The gateway's demand for the resource, summed over its replicas (None: no gateway series).
    gateway_arrival_rate: float | None = None
    gateway_queued: float | None = None
    gateway_queued_work_seconds: float | None = None
    # p95 seconds from arrival at the gateway to the pod's answer, of the requests it served (None: none).
    gateway_p95_seconds: float | None = None


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as "15s", "1m30s" or "500ms"."""
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise PrometheusQueryError(f"not a Prometheus duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def scrape_intervals(targets: Sequence[Mapping[str, object]]) -> dict[tuple[str, str], float]:
    """The longest scrape interval per (namespace, resource) among Prometheus's active targets."""
    longest: dict[tuple[str, str], float] = {}
    for target in targets:
        labels = target.get("labels")
        interval = target.get("scrapeInterval")
        if not isinstance(labels, Mapping) or not isinstance(interval, str):
            continue
        namespace, name = labels.get(NAMESPACE_LABEL), labels.get(NAME_LABEL)
        if isinstance(namespace, str) and isinstance(name, str):
            key = (namespace, name)
            longest[key] = max(longest.get(key, 0.0), parse_duration(interval))
    return longest


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((key, value) for key, value in labels.items() if key != "__name__")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
