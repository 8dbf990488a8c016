"""The operator's own /metrics: each ImageModelDeployment's status as Prometheus series.

The runtime pods export what they measure (queue, latency, batches); what only the
operator knows (the p95 target of the tier, the replicas it asked for, its
conditions) is exported here, for alerts and dashboards to join on `namespace`
and `imagefleet_io_name` (the label the runtime's ServiceMonitor copies from the pods).
Conditions follow kube-state-metrics' shape: one series per condition, with its
status and reason as labels and the value 1.

`samples()` is pure; `ResourceCollector` keeps the last seen version of each
resource and renders it on every scrape, so a deleted resource leaves no series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from .crd.models import ImageModelDeploymentSpec
from .tiers import effective_autoscaling

INFO = "imagefleet_resource_info"
CONDITION = "imagefleet_resource_condition"
DESIRED_REPLICAS = "imagefleet_resource_desired_replicas"
READY_REPLICAS = "imagefleet_resource_ready_replicas"
TARGET_P95_SECONDS = "imagefleet_resource_target_p95_seconds"

_KEY = ("namespace", "imagefleet_io_name")
_HELP = {
    INFO: "1 per ImageModelDeployment, with its tier, GPU class and model as labels.",
    CONDITION: "1 per status condition of an ImageModelDeployment, with its status and reason as labels.",
    DESIRED_REPLICAS: "Replicas the operator asks of the runtime Deployment (status.desiredReplicas).",
    READY_REPLICAS: "Runtime pods ready to serve (status.readyReplicas).",
    TARGET_P95_SECONDS: "The autoscaler's p95 latency target, the tier's preset unless the spec sets one.",
}
_LABELS = {
    INFO: (*_KEY, "tier", "gpu_class", "model"),
    CONDITION: (*_KEY, "type", "status", "reason"),
    DESIRED_REPLICAS: _KEY,
    READY_REPLICAS: _KEY,
    TARGET_P95_SECONDS: _KEY,
}


@dataclass(frozen=True)
class Sample:
    metric: str
    labels: tuple[str, ...]
    value: float


def samples(resource: Mapping[str, Any]) -> list[Sample]:
    """The series of one ImageModelDeployment as the API server returned it."""
    metadata, spec = resource["metadata"], resource.get("spec") or {}
    status = resource.get("status") or {}
    key = (metadata["namespace"], metadata["name"])
    found = [
        Sample(INFO, (*key, str(spec.get("tier", "")), str(spec.get("gpuClass", "")),
                      str((spec.get("model") or {}).get("name", ""))), 1.0)
    ]
    found += [
        Sample(CONDITION, (*key, str(condition["type"]), str(condition["status"]), str(condition.get("reason", ""))),
               1.0)
        for condition in status.get("conditions") or ()
    ]
    for metric, field in ((DESIRED_REPLICAS, "desiredReplicas"), (READY_REPLICAS, "readyReplicas")):
        if status.get(field) is not None:
            found.append(Sample(metric, key, float(status[field])))
    try:
        autoscaling = effective_autoscaling(ImageModelDeploymentSpec.model_validate(spec))
    except ValidationError:  # the API server validates specs; an old stored object may not parse
        return found
    if autoscaling.enabled:
        found.append(Sample(TARGET_P95_SECONDS, key, autoscaling.target_p95_seconds))
    return found


class ResourceCollector(Collector):
    """The last seen version of every resource, rendered at scrape time."""

    def __init__(self) -> None:
        self._resources: dict[tuple[str, str], Mapping[str, Any]] = {}

    def update(self, resource: Mapping[str, Any]) -> None:
        metadata = resource["metadata"]
        self._resources[(metadata["namespace"], metadata["name"])] = resource

    def remove(self, namespace: str, name: str) -> None:
        self._resources.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {metric: GaugeMetricFamily(metric, _HELP[metric], labels=labels) for metric, labels in _LABELS.items()}
        for resource in list(self._resources.values()):
            for sample in samples(resource):
                families[sample.metric].add_metric(sample.labels, sample.value)
        yield from families.values()
