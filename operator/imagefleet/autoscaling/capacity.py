"""How many replicas of a resource the free GPUs of its class can host right now.

Free = allocatable GPUs on the class's schedulable nodes minus what the pods
bound to them request. The resource's own bound pods count as hosted, so the
answer is "replicas that can be running", and scaling past it would only pile
up Pending pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..builders.labels import NAME_LABEL
from ..catalog import GPUClass
from ..kube import Kube

ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


async def replica_capacity(kube: Kube, gpu_class: GPUClass, namespace: str, name: str) -> int | None:
    """None for classes without a GPU resource (nothing to run out of)."""
    resource = gpu_class.gpu_resource
    if resource is None:
        return None
    selector = ",".join(f"{key}={value}" for key, value in gpu_class.node_selector.items())
    nodes = await kube.request("GET", "/api/v1/nodes", query={"labelSelector": selector} if selector else None)
    allocatable = {
        node["metadata"]["name"]: _quantity((node.get("status") or {}).get("allocatable", {}).get(resource))
        for node in nodes.get("items", [])
        if not (node.get("spec") or {}).get("unschedulable")
    }
    pods = await kube.request("GET", "/api/v1/pods", query={"fieldSelector": ACTIVE_PODS})
    used = 0
    own = 0
    for pod in pods.get("items", []):
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in allocatable or pod["metadata"].get("deletionTimestamp"):
            continue
        used += _requested(pod, resource)
        labels = pod["metadata"].get("labels") or {}
        if pod["metadata"].get("namespace") == namespace and labels.get(NAME_LABEL) == name:
            own += 1
    free = max(0, sum(allocatable.values()) - used)
    return own + free // gpu_class.gpus_per_replica


def _requested(pod: Mapping[str, Any], resource: str) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers", []):
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(resource) or (resources.get("limits") or {}).get(resource)
        total += _quantity(value)
    return total


def _quantity(value: Any) -> int:
    """Extended resources are whole numbers ("1", 8)."""
    return int(str(value)) if value not in (None, "") else 0
