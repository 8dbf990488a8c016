"""Prometheus metrics: the runtime's, the gateway's and the operator's, from the objects that export them."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Metric
from prometheus_client.metrics import MetricWrapperBase

from imagefleet.autoscaling.batch import QUERIES, SPLITS
from imagefleet.autoscaling.loop import ROUND_SECONDS
from imagefleet.gateway.telemetry import GatewayMetrics
from imagefleet.resource_metrics import ResourceCollector
from imagefleet_runtime.metrics import Metrics as RuntimeMetrics

from .markdown import code, header, table

Exported = MetricWrapperBase | Metric


def exposed_name(name: str, kind: str) -> str:
    """The name as Prometheus scrapes it: a counter's carries `_total`."""
    return f"{name}_total" if kind == "counter" else name


def row(metric: Exported) -> list[str]:
    if isinstance(metric, MetricWrapperBase):
        name, kind, help_text = metric._name, metric._type, metric._documentation  # noqa: SLF001 - no public accessor
    else:
        name, kind, help_text = metric.name, metric.type, metric.documentation
    labels = ", ".join(metric._labelnames)  # noqa: SLF001 - label names are kept only here before any sample
    return [code(exposed_name(name, kind)), kind, code(labels) if labels else "", help_text]


def runtime_metrics() -> list[Exported]:
    return [value for value in vars(RuntimeMetrics()).values() if isinstance(value, MetricWrapperBase)]


def gateway_metrics() -> list[Exported]:
    return [value for value in vars(GatewayMetrics()).values() if isinstance(value, MetricWrapperBase)]


def operator_metrics() -> list[Exported]:
    """What handlers/metrics.py registers: each resource's status as series, and the autoscaler's own."""
    return [*ResourceCollector().collect(), QUERIES, SPLITS, ROUND_SECONDS]


def _table(metrics: Iterable[Exported]) -> str:
    return table(["series", "type", "labels", "meaning"], [row(metric) for metric in metrics])


def render() -> str:
    return (
        header("python -m imagefleet_docs", "the runtime's, the gateway's and the operator's metric objects")
        + "\n# Metrics\n\n"
        "Every series imagefleet exports; names are fixed in `operator/imagefleet/metrics.py`. Scrape\n"
        "setup, alerts and the dashboard: [operations](../operations.md).\n\n"
        "## Runtime pods (`:8000/metrics`)\n\n"
        "Prometheus adds `namespace` and `imagefleet_io_name` (from the pod label `imagefleet.io/name`)\n"
        "when it scrapes them as [install](../install.md#metrics-and-the-label-contract) shows; the\n"
        "autoscaler selects on both.\n\n"
        + _table(runtime_metrics())
        + "\n## The gateway (`:8080/metrics`)\n\n"
        + _table(gateway_metrics())
        + "\n## The operator (`IMAGEFLEET_METRICS_PORT`, the chart's `metrics.port`)\n\n"
        "The resource series carry `namespace` and `imagefleet_io_name` of the resource; only the\n"
        "active replica exports them.\n\n"
        + _table(operator_metrics())
    )
