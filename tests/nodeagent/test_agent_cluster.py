"""The node agent on the real local control plane: every runtime pod is a process that serves
at its loopback pod IP, readiness follows /readyz, EndpointSlices list only ready pods,
crashes restart, bad settings show in the container status, deletion drains, and a restarted
agent adopts its processes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
from typing import Any

import httpx
import pytest
from kubernetes import client

from imagefleet.builders.deployment import build_deployment
from imagefleet.builders.labels import RUNTIME_METRICS_PORT, Owner, selector_string
from imagefleet.builders.service import build_service
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.bench.endpoints import ready_endpoints
from imagefleet.dev import build, components
from imagefleet.dev.cluster import agent_processes
from imagefleet.nodeagent.agent import agent_id
from imagefleet.nodeagent import plan
from imagefleet.resolve import resolve
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow]

CLASSES = load_gpu_classes()
POD_RANGE = ipaddress.ip_network(components.SIMULATED_POD_CIDR)
# Quick to load on the emulated engine (about 2 s on an L4) and about 2.4 s per image.
SD15_ON_L4 = {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "tier": "standard"}


def _apply(cluster: Cluster, namespace: str, name: str, replicas: int, spec: dict[str, Any],
           env: dict[str, str] | None = None, grace: int | None = None) -> None:
    """A runtime Deployment and Service exactly as the operator builds them (no owner: no operator here)."""
    owner = Owner(name, namespace, "no-owner")
    resolved = resolve(ImageModelDeploymentSpec.model_validate(spec), CLASSES)
    deployment = build_deployment(owner, resolved, replicas, "imagefleet-runtime:test")
    service = build_service(owner, resolved.spec.tier)
    for manifest in (deployment, service):
        del manifest["metadata"]["ownerReferences"]
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] not in (env or {})] + [
        {"name": key, "value": value} for key, value in (env or {}).items()
    ]
    if grace is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace
    client.AppsV1Api(cluster.api_client).create_namespaced_deployment(namespace, deployment)
    client.CoreV1Api(cluster.api_client).create_namespaced_service(namespace, service)


def _pods(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    return client.CoreV1Api(cluster.api_client).list_namespaced_pod(
        namespace, label_selector=selector_string(name)
    ).items


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _ready_pods(cluster: Cluster, namespace: str, name: str, count: int) -> list[client.V1Pod] | None:
    pods = [p for p in _pods(cluster, namespace, name) if p.metadata.deletion_timestamp is None]
    return pods if len(pods) == count and all(_ready(p) for p in pods) else None


def _container(pod: client.V1Pod) -> client.V1ContainerStatus | None:
    statuses = pod.status.container_statuses or []
    return statuses[0] if statuses else None


def _kubectl(cluster: Cluster, *args: str) -> str:
    kubectl = build.binaries([components.KUBECTL])["kubectl"]
    return subprocess.run(
        [str(kubectl), f"--kubeconfig={cluster.kubeconfig}", *args], check=True, capture_output=True, text=True
    ).stdout


def _pid_of(cluster: Cluster, pod: client.V1Pod) -> int:
    (pid,) = agent_processes(cluster.plane.state_dir)[pod.metadata.uid]
    return pid


def test_runtime_pods_serve_at_loopback_ips_and_only_ready_ones_are_endpoints(cluster: Cluster, namespace: str) -> None:
    # SDXL on an A100 takes about 6.6 s to load: long enough to see a pod that runs but is not ready.
    _apply(cluster, namespace, "loading", 1, {"model": {"name": "sdxl"}, "gpuClass": "a100-80gb", "tier": "standard"})
    (pod,) = wait_until(
        lambda: [p for p in _pods(cluster, namespace, "loading") if p.status.pod_ip], message="a pod IP"
    )
    # The process answers (it may take a moment to bind, as a container does), but is still loading.
    loading = wait_until(lambda: httpx.get(f"http://{pod.status.pod_ip}:8000/readyz", timeout=5),
                         message="the runtime to answer")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    assert not _ready(client.CoreV1Api(cluster.api_client).read_namespaced_pod(pod.metadata.name, namespace))
    assert ready_endpoints(cluster.api_client, namespace, "loading") == []

    _apply(cluster, namespace, "thumbs", 2, SD15_ON_L4)
    pods = wait_until(lambda: _ready_pods(cluster, namespace, "thumbs", 2), timeout=60, message="2 ready pods")
    ips = sorted(p.status.pod_ip for p in pods)
    assert all(ipaddress.ip_address(ip) in POD_RANGE for ip in ips) and len(set(ips)) == 2
    for ip in ips:
        card = httpx.get(f"http://{ip}:8000/v1/models", timeout=5).json()["data"][0]
        assert (card["id"], card["emulated"], card["gpu_class"]) == ("sd15", True, "l4-24gb")
    assert wait_until(lambda: ready_endpoints(cluster.api_client, namespace, "thumbs") == [
        f"http://{ip}:8000" for ip in ips
    ], message="both pods in the EndpointSlice")

    wide = _kubectl(cluster, "-n", namespace, "get", "pods", "-o", "wide")
    assert all(ip in wide for ip in ips), wide
    slices = _kubectl(cluster, "-n", namespace, "get", "endpointslices", "-l", "kubernetes.io/service-name=thumbs")
    assert all(ip in slices for ip in ips), slices

    wait_until(lambda: _ready_pods(cluster, namespace, "loading", 1), timeout=60, message="the SDXL pod to load")
    assert ready_endpoints(cluster.api_client, namespace, "loading") == [f"http://{pod.status.pod_ip}:8000"]


def test_a_killed_runtime_makes_its_pod_unready_and_is_restarted(cluster: Cluster, namespace: str) -> None:
    _apply(cluster, namespace, "crashy", 1, SD15_ON_L4)
    (pod,) = wait_until(lambda: _ready_pods(cluster, namespace, "crashy", 1), timeout=60, message="a ready pod")
    os.kill(_pid_of(cluster, pod), signal.SIGKILL)

    def unready() -> client.V1Pod | None:
        current = client.CoreV1Api(cluster.api_client).read_namespaced_pod(pod.metadata.name, namespace)
        container = _container(current)
        return current if not _ready(current) and container and container.restart_count == 1 else None

    wait_until(unready, timeout=10, message="the pod to be unready with one restart")
    (again,) = wait_until(lambda: _ready_pods(cluster, namespace, "crashy", 1), timeout=60, message="ready again")
    container = _container(again)
    assert container is not None and container.restart_count == 1
    assert again.status.pod_ip == pod.status.pod_ip
    assert (container.last_state.terminated.exit_code, container.last_state.terminated.reason) == (137, "Error")


def test_settings_the_runtime_rejects_show_in_the_container_status(cluster: Cluster, namespace: str) -> None:
    _apply(cluster, namespace, "misconfigured", 1, SD15_ON_L4, env={"IMAGEFLEET_MAX_BATCH_SIZE": "0"})

    def crashing() -> client.V1ContainerStatus | None:
        pods = _pods(cluster, namespace, "misconfigured")
        container = _container(pods[0]) if pods else None
        looping = container and container.state.waiting and container.state.waiting.reason == "CrashLoopBackOff"
        return container if looping else None

    container = wait_until(crashing, timeout=30, message="CrashLoopBackOff")
    terminated = container.last_state.terminated
    assert (terminated.exit_code, terminated.reason) == (2, "Error")
    assert "max_batch_size" in terminated.message and "invalid settings" in terminated.message
    assert not container.ready and container.restart_count >= 2


def test_a_taken_pod_address_shows_in_the_pod_status(cluster: Cluster, namespace: str) -> None:
    in_use = [
        p.status.pod_ip for p in client.CoreV1Api(cluster.api_client).list_pod_for_all_namespaces(
            label_selector=plan.RUNTIME_SELECTOR
        ).items if p.status.pod_ip
    ]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        block = plan.agent_pod_cidr(agent_id(cluster.plane.state_dir))
        squatter.bind((plan.allocate_ip(in_use, block), 8000))
        squatter.listen()
        _apply(cluster, namespace, "squatted", 1, SD15_ON_L4)

        def refused() -> client.V1ContainerStatus | None:
            pods = _pods(cluster, namespace, "squatted")
            container = _container(pods[0]) if pods else None
            return container if container and container.last_state.terminated else None

        terminated = wait_until(refused, timeout=30, message="the bind failure").last_state.terminated
    assert terminated.reason == "AddressInUse" and "address already in use" in terminated.message


def test_deleting_a_pod_under_load_answers_every_accepted_request(cluster: Cluster, namespace: str) -> None:
    _apply(cluster, namespace, "draining", 1, SD15_ON_L4, grace=60)
    (pod,) = wait_until(lambda: _ready_pods(cluster, namespace, "draining", 1), timeout=60, message="a ready pod")
    url = f"http://{pod.status.pod_ip}:8000/v1/images/generations"

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as http:
            requests = [asyncio.create_task(http.post(url, json={"prompt": "p", "steps": 10})) for _ in range(12)]
            # Every request is queued (the queue gauge says so) before the pod is deleted.
            await asyncio.to_thread(
                wait_until, lambda: _queued(pod.status.pod_ip) >= 8, timeout=10, message="queued requests"
            )
            await asyncio.to_thread(
                client.CoreV1Api(cluster.api_client).delete_namespaced_pod, pod.metadata.name, namespace
            )
            return [response.status_code for response in await asyncio.gather(*requests)]

    codes = asyncio.run(load())
    assert codes == [200] * 12
    wait_until(lambda: not any(p.metadata.uid == pod.metadata.uid for p in _pods(cluster, namespace, "draining")),
               message="the drained pod to be removed")
    assert pod.metadata.uid not in agent_processes(cluster.plane.state_dir)


def _queued(ip: str) -> float:
    metrics = httpx.get(f"http://{ip}:{RUNTIME_METRICS_PORT}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("imagefleet_queue_depth "))


def _agent_alive(cluster: Cluster) -> bool:
    from imagefleet.dev.processes import alive

    return alive(cluster.plane.pids["node-agent"])


def test_a_restarted_agent_adopts_its_runtimes_and_stops_orphans(cluster: Cluster, namespace: str) -> None:
    _apply(cluster, namespace, "kept", 1, SD15_ON_L4)
    _apply(cluster, namespace, "orphaned", 1, SD15_ON_L4)
    (kept,) = wait_until(lambda: _ready_pods(cluster, namespace, "kept", 1), timeout=60, message="kept ready")
    (orphaned,) = wait_until(lambda: _ready_pods(cluster, namespace, "orphaned", 1), timeout=60, message="ready")
    kept_pid, orphan_pid = _pid_of(cluster, kept), _pid_of(cluster, orphaned)

    os.kill(cluster.plane.pids["node-agent"], signal.SIGKILL)
    try:
        wait_until(lambda: not _agent_alive(cluster), message="the agent to die")
        # While no agent runs: the pod goes away for good (forced), its process stays behind.
        client.AppsV1Api(cluster.api_client).delete_namespaced_deployment("orphaned", namespace)
        client.CoreV1Api(cluster.api_client).delete_namespaced_pod(
            orphaned.metadata.name, namespace, grace_period_seconds=0
        )
        assert orphan_pid in agent_processes(cluster.plane.state_dir)[orphaned.metadata.uid]
    finally:
        cluster.plane.start_node_agent()

    wait_until(lambda: orphaned.metadata.uid not in agent_processes(cluster.plane.state_dir), timeout=30,
               message="the orphan to be stopped")
    assert agent_processes(cluster.plane.state_dir)[kept.metadata.uid] == [kept_pid]  # adopted, not duplicated
    current = client.CoreV1Api(cluster.api_client).read_namespaced_pod(kept.metadata.name, namespace)
    assert _ready(current) and _container(current).restart_count == 0
    assert httpx.get(f"http://{kept.status.pod_ip}:8000/readyz", timeout=5).status_code == 200
