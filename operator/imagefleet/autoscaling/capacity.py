"""How many replicas of a resource the free GPUs of its class can host right now.

Free = allocatable GPUs on the class's schedulable nodes minus what the pods
bound to them request, counted as the scheduler counts them: every pod with a
node that has not terminated (phase neither Succeeded nor Failed, terminating
pods included), its request the larger of its containers' sum and its largest
init container, plus the pod overhead. The resource's own bound pods count as
hosted, so the answer is "replicas that can be running", and scaling past it
would only pile up Pending pods.

The inputs are small summaries of nodes and pods (`node_gpus`, `pod_gpus`): the
operator keeps them in kopf indexes fed by watch events, so a decision reads
memory, not the API server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..builders.labels import NAME_LABEL
from ..catalog import GPUClass

TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
# The same, as a field selector for a LIST of pods.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass(frozen=True)
class NodeGPUs:
    name: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, int]  # extended resources only
    schedulable: bool


@dataclass(frozen=True)
class PodGPUs:
    node: str
    namespace: str
    resource: str | None  # the imagefleet.io/name label: whose replica it is
    requests: Mapping[str, int]  # extended resources only, as the scheduler sums them


def node_gpus(node: Mapping[str, Any]) -> NodeGPUs:
    metadata = node.get("metadata") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return NodeGPUs(
        name=metadata.get("name", ""),
        labels=dict(metadata.get("labels") or {}),
        allocatable=_extended(allocatable),
        schedulable=not (node.get("spec") or {}).get("unschedulable"),
    )


def pod_gpus(pod: Mapping[str, Any]) -> PodGPUs | None:
    """The pod's extended-resource requests; None when it holds none (unbound, terminated, or no request)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in TERMINATED_PHASES:
        return None
    requests = _pod_requests(spec)
    if not requests:
        return None
    metadata = pod.get("metadata") or {}
    return PodGPUs(node, metadata.get("namespace", ""), (metadata.get("labels") or {}).get(NAME_LABEL), requests)


@dataclass(frozen=True)
class ClassUsage:
    """A GPU class right now: its free GPUs, and the replicas each resource has bound to its nodes."""

    free_gpus: int
    hosted: Mapping[tuple[str, str], int]
    gpus_per_replica: int

    def replicas(self, namespace: str, name: str) -> int:
        """Replicas of `namespace/name` that can be running: its own bound pods plus what the free GPUs host."""
        return self.hosted.get((namespace, name), 0) + self.free_gpus // self.gpus_per_replica


def class_usage(nodes: Iterable[NodeGPUs], pods: Iterable[PodGPUs], gpu_class: GPUClass) -> ClassUsage | None:
    """None for classes without a GPU resource (nothing to run out of)."""
    resource = gpu_class.gpu_resource
    if resource is None:
        return None
    selector = gpu_class.node_selector.items()
    allocatable = {
        node.name: node.allocatable.get(resource, 0)
        for node in nodes
        if node.schedulable and all(node.labels.get(key) == value for key, value in selector)
    }
    used = 0
    hosted: dict[tuple[str, str], int] = {}
    for pod in pods:
        if pod.node not in allocatable:
            continue
        used += pod.requests.get(resource, 0)
        if pod.resource is not None:
            key = (pod.namespace, pod.resource)
            hosted[key] = hosted.get(key, 0) + 1
    return ClassUsage(max(0, sum(allocatable.values()) - used), hosted, gpu_class.gpus_per_replica)


def _pod_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    """max(sum of containers and sidecars, largest init container) + overhead, per extended resource."""
    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        _add(total, _container_requests(container))
    init_peak: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    for container in spec.get("initContainers") or []:
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar runs beside the containers
            _add(sidecars, requests)
            _add(total, requests)
        else:
            # A regular init container runs after the sidecars declared before it started.
            for key, value in requests.items():
                init_peak[key] = max(init_peak.get(key, 0), value + sidecars.get(key, 0))
    for key, value in init_peak.items():
        total[key] = max(total.get(key, 0), value)
    _add(total, _extended(spec.get("overhead") or {}))
    return {key: value for key, value in total.items() if value}


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    # Extended resources cannot be overcommitted: a limit alone is also the request.
    return _extended({**(resources.get("limits") or {}), **(resources.get("requests") or {})})


def _extended(quantities: Mapping[str, Any]) -> dict[str, int]:
    """Whole-number extended resources (vendor-domain names such as nvidia.com/gpu)."""
    result = {}
    for key, value in quantities.items():
        if "/" in key and not key.startswith(("kubernetes.io/", "hugepages-")):
            try:
                result[key] = int(str(value))
            except ValueError:
                continue
    return result


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
