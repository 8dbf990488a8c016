"""Control-plane faults on a local control plane of these tests' own (tests/faults/conftest.py):
the API server or etcd restarted while the operator runs, the operator killed during a scale-up,
Prometheus restarted during a scale-down, and a simulated GPU node deleted under load.

Runtime pods are real processes (the node agent; emulated engine, an L4's published timings).
Each test ends with the fleet converged, and where requests run, every request that the fleet
accepted was answered (tests/faults/load.py says what counts as accepted). Figures printed here
are from the emulated fleet.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from imagefleet import KIND
from imagefleet import conditions as c
from imagefleet import metrics as names
from imagefleet.autoscaling import policy
from imagefleet.autoscaling.loop import SCALING, SCALING_LIMITED
from imagefleet.bench.endpoints import Endpoints, ready_endpoints
from imagefleet.dev.fleet import node_manifests
from imagefleet.dev.prometheus import LocalPrometheus, Target
from tests.conftest import Cluster
from tests.gateway.process import gateway_process
from tests.helpers import wait_until
from tests.operator.harness import Imds, operator_writes
from tests.runtime.support import sample

from .conftest import FLEET, StartOperator
from .load import ANSWERED, LOST, Cached, Load

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

TINY = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"}
WINDOW_SECONDS = 20


def autoscaled_sd15(max_replicas: int) -> dict[str, Any]:
    return {
        "model": {"name": "sd15"}, "gpuClass": "l4-24gb", "tier": "standard", "precision": "fp16",
        "autoscaling": {
            "enabled": True, "minReplicas": 1, "maxReplicas": max_replicas, "targetQueueDepth": 4,
            "targetP95Seconds": 10.0, "scaleDownStabilizationSeconds": WINDOW_SECONDS,
        },
    }


class ResourceView:
    """One resource's Deployment, pods and events, read through the API server."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.apps = client.AppsV1Api(cluster.api_client)
        self.core = client.CoreV1Api(cluster.api_client)
        self.imds = Imds(cluster.api_client, namespace)

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment(self.name, self.namespace).spec.replicas)

    def converged(self, replicas: int | None = None) -> int | None:
        """The replica count once the resource is Ready and every desired replica is ready."""
        deployment = self.apps.read_namespaced_deployment(self.name, self.namespace)
        want = deployment.spec.replicas
        status = deployment.status
        settled = (status.ready_replicas or 0) == want == (status.updated_replicas or 0) == (status.replicas or 0)
        if not settled or (replicas is not None and want != replicas) or not self.imds.is_ready(self.name):
            return None
        return int(want)

    def pods(self) -> list[client.V1Pod]:
        return [
            pod for pod in self.core.list_namespaced_pod(self.namespace, label_selector=f"imagefleet.io/name={self.name}").items
            if pod.metadata.deletion_timestamp is None
        ]

    def event_reasons(self) -> list[str]:
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name},involvedObject.kind={KIND}"
        ).items
        return [e.reason for e in sorted(listed, key=lambda e: (e.metadata.creation_timestamp, e.metadata.name))]

    def children(self) -> Counter[str]:
        """How many Deployments, Services and ReplicaSets the namespace holds."""
        return Counter(
            {
                "Deployment": len(self.apps.list_namespaced_deployment(self.namespace).items),
                "Service": len(self.core.list_namespaced_service(self.namespace).items),
                "ReplicaSet": len(self.apps.list_namespaced_replica_set(self.namespace).items),
            }
        )


def child_writes(plane: Cluster, namespace: str) -> Counter[tuple[str, str]]:
    """The operator's writes (server-side applies) of Deployments and Services in `namespace`,
    by (resource, name), from the API server's audit log."""
    return Counter(
        (event["objectRef"].get("resource", ""), event["objectRef"].get("name", ""))
        for event in operator_writes(plane.plane.audit_log, 0, namespace)
        if event["objectRef"].get("resource") in ("deployments", "services")
    )


def assert_nothing_lost(load: Load) -> None:
    print(f"requests: {dict(load.outcomes)}")
    assert load.outcomes[ANSWERED] > 0, load.outcomes
    assert load.outcomes[LOST] == 0, load.lost[:5]


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_restarted_while_the_operator_runs_the_watch_resumes_and_nothing_is_written_twice(
    plane: Cluster, fault_namespace: str, start_operator: StartOperator, component: str
) -> None:
    imds = Imds(plane.api_client, fault_namespace)
    start_operator()
    imds.create("steady", TINY)
    imds.create("edited", TINY)
    for name in ("steady", "edited"):
        imds.wait_ready(name, timeout=90)
    urls = ready_endpoints(plane.api_client, fault_namespace, "steady")
    steady_version = imds.get("steady")["metadata"]["resourceVersion"]

    with Load(Cached(urls), clients=2) as load:  # a client that cached the endpoints keeps sending
        restarted = time.time()
        started = time.monotonic()
        plane.plane.restart(component)
        wait_until(lambda: imds.get("edited"), timeout=90, interval=0.5,
                   message=f"the API server to serve the resources again after {component} restarted")
        back = time.monotonic() - started
        # Changes made after the restart reach the operator only through a resumed watch.
        imds.patch_spec("edited", {"replicas": 2})
        imds.create("late", TINY)
        edited, late = ResourceView(plane, fault_namespace, "edited"), ResourceView(plane, fault_namespace, "late")
        wait_until(lambda: edited.converged(2) and late.converged(1), timeout=120,
                   message="the edit and the new resource to converge")
        converged = time.monotonic() - started
    assert_nothing_lost(load)

    print(f"{component} restarted: the API answered again after {back:.1f}s; converged {converged:.1f}s after the restart")
    assert imds.is_ready("steady")
    assert imds.get("steady")["metadata"]["resourceVersion"] == steady_version
    touched = [
        (w["verb"], w["objectRef"].get("resource"), w["objectRef"].get("name"))
        for w in operator_writes(plane.plane.audit_log, restarted, fault_namespace)
        if w["objectRef"].get("name") == "steady"
    ]
    assert touched == [], f"the operator rewrote an unchanged resource after the restart: {touched}"
    # One apply per child and spec change: the edit re-applied only its Deployment.
    assert child_writes(plane, fault_namespace) == Counter({
        ("deployments", "steady"): 1, ("services", "steady"): 1, ("deployments", "edited"): 2,
        ("services", "edited"): 1, ("deployments", "late"): 1, ("services", "late"): 1,
    })
    assert ResourceView(plane, fault_namespace, "steady").children() == Counter(Deployment=3, Service=3, ReplicaSet=3)


def test_operator_killed_during_a_scale_up_then_prometheus_restarted_during_the_scale_down(
    plane: Cluster, fault_namespace: str, start_operator: StartOperator, prometheus: LocalPrometheus
) -> None:
    fleet = ResourceView(plane, fault_namespace, "burst")
    first = start_operator()
    fleet.imds.create("burst", autoscaled_sd15(max_replicas=3))
    wait_until(lambda: fleet.imds.condition("burst", c.METRICS_AVAILABLE)["status"] == c.TRUE,  # type: ignore[index]
               timeout=90, message="MetricsAvailable=True")
    endpoints = Endpoints(plane.api_client, fault_namespace, "burst")
    wait_until(endpoints.any_ready, timeout=60, message="a ready endpoint")

    # 1. The operator is killed (SIGKILL) the moment it has scaled up; a new one takes over.
    with Load(endpoints, clients=16) as burst:
        wait_until(lambda: fleet.replicas() > 1, timeout=60, interval=0.1, message="the first scale-up")
        first.kill()
        at_kill = fleet.replicas()
        killed = time.monotonic()
        start_operator()
        wait_until(lambda: fleet.converged(3), timeout=120,
                   message="3 ready replicas (maxReplicas) under load after the operator restarted")
        up = time.monotonic() - killed
    assert_nothing_lost(burst)
    print(f"operator killed at {at_kill} replicas; 3 ready replicas {up:.1f}s later under the new operator")
    assert fleet.children() == Counter(Deployment=1, Service=1, ReplicaSet=1)
    print(f"operator writes of the Deployment and Service: {dict(child_writes(plane, fault_namespace))}")

    # 2. The load falls to one client with pauses (one replica is enough for it). While the
    # autoscaler holds 3 replicas for its scale-down window, Prometheus restarts (its rate
    # windows start empty); the scale-down goes on to 1 replica, with no scale-up on the way.
    with Load(endpoints, clients=1, pause=2.0) as trickle:
        wait_until(lambda: _scaling_reason(fleet, "burst") == policy.STABILIZING, timeout=60,
                   message="the scale-down window to begin")
        events_before = len(fleet.event_reasons())
        assert fleet.replicas() == 3
        prometheus.stop()
        prometheus.start()
        restarted = time.monotonic()
        wait_until(lambda: fleet.converged(1), timeout=WINDOW_SECONDS + 90, message="the scale-down to 1 replica")
        down = time.monotonic() - restarted
    assert_nothing_lost(trickle)
    later = fleet.event_reasons()[events_before:]
    print(f"Prometheus restarted in the scale-down window at 3 replicas; 1 ready replica {down:.1f}s later; "
          f"events since: {later}")
    assert policy.SCALED_DOWN in later and policy.SCALED_UP not in later, later
    assert fleet.imds.condition("burst", c.METRICS_AVAILABLE)["status"] == c.TRUE  # type: ignore[index]


def test_gpu_node_deleted_under_load_its_pod_moves_and_capacity_sees_the_smaller_fleet(
    plane: Cluster, fault_namespace: str, start_operator: StartOperator, prometheus: LocalPrometheus, tmp_path: Path
) -> None:
    """It removes a node, and puts it back at the end. The load goes through the gateway (scraped by
    Prometheus, so the autoscaler sees the demand waiting there), whose promise when a node dies is
    that a request its pod held, unanswered, is made again elsewhere: nobody received that image.
    So nothing is lost."""
    fleet = ResourceView(plane, fault_namespace, "moving")
    start_operator()
    fleet.imds.create("moving", autoscaled_sd15(max_replicas=3))
    fleet.imds.wait_ready("moving", timeout=90)
    endpoints = Endpoints(plane.api_client, fault_namespace, "moving")
    wait_until(endpoints.any_ready, timeout=60, message="a ready endpoint")
    nodes = [n for n in node_manifests(FLEET) if n["metadata"]["labels"].get("nvidia.com/gpu.product") == "NVIDIA-L4"]

    with (gateway_process(plane.kubeconfig, fault_namespace, tmp_path / "gateway.log") as process,
          scraped(prometheus, process.url), Load(Cached([process.url]), clients=16, model="moving") as load):
        wait_until(lambda: fleet.converged(3), timeout=120, message="3 ready replicas under load (on 3 of the 4 L4 nodes)")
        victim = fleet.pods()[0]
        node = victim.spec.node_name
        deleted = time.monotonic()
        fleet.core.delete_node(node)
        try:
            wait_until(lambda: all(p.metadata.uid != victim.metadata.uid for p in fleet.pods()), timeout=120,
                       message=f"the pod on the deleted node {node} to be removed")
            removed = time.monotonic() - deleted
            wait_until(lambda: fleet.converged(3) and all(p.spec.node_name != node for p in fleet.pods()), timeout=90,
                       message="3 ready replicas again, none on the deleted node")
            moved = time.monotonic() - deleted
            # Only 3 L4 nodes are left and each runs a replica: more replicas find no GPU.
            fleet.imds.patch_spec("moving", {"autoscaling": {"maxReplicas": 5}})
            limited = wait_until(lambda: _limited(fleet, "moving"), timeout=60,
                                 message="ScalingLimited=True InsufficientGPUs")
            assert fleet.replicas() == 3
        finally:  # the node comes back for the other tests of the module
            fleet.core.create_node(next(n for n in nodes if n["metadata"]["name"] == node))
        resent = sample(httpx.get(f"{process.metrics_url}/metrics", timeout=5).text, names.GATEWAY_RETRIES_TOTAL)
    assert_nothing_lost(load)
    print(f"the gateway sent {resent:.0f} requests again; "
          f"node {node} deleted: its pod removed after {removed:.1f}s, 3 ready replicas again after {moved:.1f}s; "
          f"ScalingLimited: {limited}")
    assert "no free GPUs for more than 3 replicas" in limited


@contextmanager
def scraped(prometheus: LocalPrometheus, url: str) -> Iterator[None]:
    """Prometheus scrapes `url` (a gateway) while in the block."""
    prometheus.set_targets([Target(url.removeprefix("http://"))])
    try:
        yield
    finally:
        prometheus.set_targets([])


def _scaling_reason(fleet: ResourceView, name: str) -> str | None:
    condition = fleet.imds.condition(name, SCALING)
    return None if condition is None else str(condition["reason"])


def _limited(fleet: ResourceView, name: str) -> str | None:
    condition = fleet.imds.condition(name, SCALING_LIMITED)
    if condition and condition["status"] == c.TRUE and condition["reason"] == policy.INSUFFICIENT_GPUS:
        return str(condition["message"])
    return None

