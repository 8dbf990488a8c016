"""A pool member's own status, from its pool's autoscaling round. Pure: no I/O, no clock.

Where it is resident: the pool pods whose `imagefleet_resident` series hold its checkpoint (and its
adapter) on the GPU, where a request for it is a residency hit, and those holding its checkpoint in host
RAM, where it swaps in without a disk read. Its requests per second and p95 come from the gateway's series
for it (arrivals, and the seconds from arrival to the pod's answer of the requests it served). The round
reads all of that in its batched queries, whatever the number of members; the autoscaler writes a member's
fields under its own field manager only when they change, with MetricsAvailable saying where they came
from, or why they could not be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagefleet import metrics

from .. import conditions as c
from ..crd.models import MAX_LISTED_PODS, ImageModelDeploymentSpec
from ..residency import adapter_key, checkpoint_key
from .prometheus import Sample

# MetricsAvailable reasons of a member (the failures of a read are the autoscaler's own).
RESIDENCY_READ = "ResidencyRead"
NO_RESIDENCY_SERIES = "NoResidencySeries"
# The labels of the runtime's resident gauge, and the scrape's pod label (the instance without one).
CHECKPOINT_LABEL, ADAPTER_LABEL, PLACE_LABEL, POD_LABEL = "checkpoint", "adapter", "place", "pod"

Verdict = tuple[str, str, str]  # status, reason, message
# A member's status fields the autoscaler owns: its apply sets these and MetricsAvailable, nothing else, so the
# fields it owned while the resource was autoscaled on its own (desiredReplicas, Scaling...) are removed.
MEMBER_FIELDS = ("p95Seconds", "requestsPerSecond", "residency")


@dataclass(frozen=True)
class MemberUsage:
    """One member's residency and traffic, as a round read them."""

    gpu: tuple[str, ...]  # pool pods holding its checkpoint (and adapter) on the GPU, sorted
    host: tuple[str, ...]  # pool pods holding its checkpoint in host RAM, sorted
    requests_per_second: float | None  # None: no gateway series for it
    p95_seconds: float | None  # None: it served no request in the window


def residency_key(spec: ImageModelDeploymentSpec) -> tuple[str, str]:
    """(checkpoint, adapter) as a pool pod's residency names the member's weights ("" for no adapter)."""
    model, adapter = spec.model, spec.model.adapter
    held = "" if adapter is None else adapter_key(adapter.name, adapter.weight_name)
    return checkpoint_key(model.name, model.revision), held


def reporting_pods(samples: Sequence[Sample]) -> int:
    """Pool pods with a resident series in the round."""
    return len({_pod(sample.labels) for sample in samples})


def member_usage(samples: Sequence[Sample], key: tuple[str, str], requests_per_second: float | None,
                 p95_seconds: float | None) -> MemberUsage:
    """Where the member `key` (`residency_key`) is resident among the pool pods' `samples`, with its traffic."""
    checkpoint, adapter = key
    gpu: set[str] = set()
    host: set[str] = set()
    for sample in samples:
        labels = sample.labels
        if labels.get(CHECKPOINT_LABEL) != checkpoint:
            continue
        place, held = labels.get(PLACE_LABEL), labels.get(ADAPTER_LABEL, "")
        if place == "gpu" and held == adapter:
            gpu.add(_pod(labels))
        elif place == "host" and held == "":
            host.add(_pod(labels))
    return MemberUsage(tuple(sorted(gpu)), tuple(sorted(host - gpu)), requests_per_second, p95_seconds)


def read_verdict(reporting: int, ready: int, window: str) -> Verdict:
    """MetricsAvailable of the pool's members after a read: True, unless ready pool pods report no residency."""
    if ready and not reporting:
        return (c.FALSE, NO_RESIDENCY_SERIES,
                f"{ready} ready pool pods but no {metrics.RESIDENT} series from them: add the runtime pods' scrape job "
                f"(docs/install.md), so where each member is resident can be read ({window})")
    pods = "no pool pod is running" if not ready else f"{reporting} pool pods report"
    return (c.TRUE, RESIDENCY_READ,
            f"residency from the pool pods' {metrics.RESIDENT} ({pods}), requests and p95 from the gateway's series "
            f"for this member ({window})")


def member_status_patch(status: Mapping[str, Any], usage: MemberUsage | None, verdict: Verdict, *,
                        generation: int | None) -> dict[str, Any] | None:
    """The autoscaler's fields of a member's status as a merge patch; None when they already say this.
    `usage` None: the read failed, and the figures are removed rather than left stale."""
    conditions = c.set_condition(status.get("conditions"), c.METRICS_AVAILABLE, *verdict, generation=generation)
    wanted: dict[str, Any] = {
        "p95Seconds": None if usage is None or usage.p95_seconds is None else round(usage.p95_seconds, 3),
        "requestsPerSecond": None if usage is None else _significant(usage.requests_per_second),
        "residency": None if usage is None else {
            "gpuPods": len(usage.gpu), "hostPods": len(usage.host),
            **({"gpu": list(usage.gpu[:MAX_LISTED_PODS])} if usage.gpu else {}),
            **({"host": list(usage.host[:MAX_LISTED_PODS])} if usage.host else {}),
        },
        "conditions": conditions,
    }
    patch = {key: value for key, value in wanted.items() if status.get(key) != value}
    return patch or None


def member_owned_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaler's fields and condition of a member's status: the body of its server-side apply."""
    owned: dict[str, Any] = {key: status[key] for key in MEMBER_FIELDS if status.get(key) is not None}
    owned["conditions"] = [condition for condition in status.get("conditions") or ()
                           if condition.get("type") == c.METRICS_AVAILABLE]
    return owned


def _significant(value: float | None) -> float | None:
    """Two significant digits: a rate that wobbles in its third digit is not a change worth a write."""
    return None if value is None else float(f"{value:.2g}")


def _pod(labels: Mapping[str, str]) -> str:
    return labels.get(POD_LABEL) or labels.get("instance", "")
