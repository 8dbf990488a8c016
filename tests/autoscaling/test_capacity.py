"""Free GPUs as the scheduler counts them, from node and pod summaries (the operator's indexes)."""

from __future__ import annotations

from typing import Any

from imagefleet.autoscaling.capacity import class_usage, node_gpus, pod_gpus
from imagefleet.builders.labels import NAME_LABEL
from imagefleet.catalog import load_gpu_classes

CLASSES = load_gpu_classes()
A100 = CLASSES["a100-80gb"]
GPU = str(A100.gpu_resource)


def node(name: str, gpus: int, klass: str = "a100-80gb", unschedulable: bool = False) -> dict[str, Any]:
    labels = dict(CLASSES[klass].node_selector)
    return {"metadata": {"name": name, "labels": labels}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {GPU: str(gpus), "cpu": "32", "memory": "256Gi"}}}


def pod(node_name: str | None, gpus: int, *, owner: str = "other", phase: str = "Running",
        init_gpus: int = 0, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"namespace": "ns", "labels": {NAME_LABEL: owner}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"resources": {"limits": {GPU: str(gpus)}, "requests": {"cpu": "500m"}}}]}
    if node_name:
        spec["nodeName"] = node_name
    if init_gpus:
        spec["initContainers"] = [{"resources": {"requests": {GPU: str(init_gpus)}}}]
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


def capacity(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], name: str = "mine") -> int | None:
    used = [summary for summary in map(pod_gpus, pods) if summary is not None]
    usage = class_usage([node_gpus(n) for n in nodes], used, A100)
    return None if usage is None else usage.replicas("ns", name)


def test_free_gpus_of_the_class_plus_the_resource_own_pods() -> None:
    nodes = [node("a", 4), node("b", 4), node("h", 8, klass="h100-80gb"), node("off", 4, unschedulable=True)]
    pods = [pod("a", 1, owner="mine"), pod("a", 2), pod("h", 8), pod("off", 4)]
    # 8 allocatable on schedulable a100 nodes, 3 requested there: 5 free, plus its one running pod.
    assert capacity(nodes, pods) == 6


def test_terminated_and_unbound_pods_hold_nothing_but_terminating_ones_do() -> None:
    nodes = [node("a", 4)]
    pods = [pod("a", 1, phase="Succeeded"), pod("a", 1, phase="Failed"), pod(None, 1, phase="Pending"),
            pod("a", 1, deleting=True)]
    assert capacity(nodes, pods) == 3  # the scheduler keeps counting a terminating pod until it is gone


def test_an_init_container_larger_than_the_containers_sets_the_request() -> None:
    assert capacity([node("a", 4)], [pod("a", 1, init_gpus=3)]) == 1
    assert pod_gpus(pod("a", 0)) is None  # no extended resource: not indexed at all


def test_classes_without_a_gpu_resource_have_no_limit() -> None:
    assert class_usage([node_gpus(node("a", 4))], [], CLASSES["cpu"]) is None
