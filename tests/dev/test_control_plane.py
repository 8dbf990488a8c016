"""The local control plane is real: GPU scheduling, kubectl, and a clean up/down lifecycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from imagefleet.dev import build, components, processes
from tests.conftest import Cluster
from tests.helpers import wait_until

H100_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_deployment(name: str, replicas: int, gpus: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": H100_SELECTOR,
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "example.invalid/runtime:1",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def test_gpu_pods_land_on_their_class_and_become_ready(cluster: Cluster, namespace: str) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    apps.create_namespaced_deployment(namespace, gpu_deployment("h100", replicas=3, gpus=1))

    def ready_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=h100").items
        ready = [
            p for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        return pods if len(ready) == 3 else []

    pods = wait_until(ready_pods, timeout=60, message="3 ready pods of the H100 deployment")
    for pod in pods:
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    wait_until(
        lambda: apps.read_namespaced_deployment(name="h100", namespace=namespace).status.ready_replicas == 3,
        timeout=30,
        message="the Deployment to report 3 ready replicas",
    )


def test_more_gpus_than_the_fleet_has_stays_pending(cluster: Cluster, namespace: str) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    # Each simulated H100 node has 8 GPUs: a pod asking for 9 never fits.
    apps.create_namespaced_deployment(namespace, gpu_deployment("too-big", replicas=1, gpus=9))

    def unschedulable_message() -> str:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=too-big").items:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return condition.message or ""
        return ""

    message = wait_until(unschedulable_message, timeout=60, message="the scheduler to give up on the pod")
    assert "Insufficient nvidia.com/gpu" in message
    pod = core.list_namespaced_pod(namespace, label_selector="app=too-big").items[0]
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_kubectl_lists_the_simulated_gpu_nodes(cluster: Cluster) -> None:
    kubectl = build.binaries([components.KUBECTL])["kubectl"]
    out = subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "get", "nodes", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}
    assert nodes["h100-80gb-0"]["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert nodes["t4-16gb-0"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"
    table = subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "get", "nodes", "-L", "nvidia.com/gpu.product"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "h200-141gb-0" in table and "NVIDIA-H200" in table and "Ready" in table


def test_the_api_server_publishes_its_own_front_proxy_ca_for_extension_api_servers(cluster: Cluster) -> None:
    published = client.CoreV1Api(cluster.api_client).read_namespaced_config_map(
        "extension-apiserver-authentication", "kube-system"
    ).data
    front_proxy_ca = (cluster.plane.pki_dir / "front-proxy-ca.crt").read_text()
    assert published["requestheader-client-ca-file"].strip() == front_proxy_ca.strip()
    assert published["client-ca-file"].strip() != front_proxy_ca.strip()
    assert json.loads(published["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(published["requestheader-username-headers"]) == ["X-Remote-User"]


def test_the_controller_manager_runs_the_hpa_controller(cluster: Cluster, namespace: str) -> None:
    """An HPA on an external metric that nothing serves: the HPA controller takes it up and says why it cannot scale."""
    client.AppsV1Api(cluster.api_client).create_namespaced_deployment(namespace, gpu_deployment("web", 1, gpus=1))
    hpas = client.AutoscalingV2Api(cluster.api_client)
    hpas.create_namespaced_horizontal_pod_autoscaler(namespace, {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{
                "type": "External",
                "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "4"}},
            }],
        },
    })

    def active_condition() -> client.V2HorizontalPodAutoscalerCondition | None:
        conditions = hpas.read_namespaced_horizontal_pod_autoscaler("web", namespace).status.conditions or []
        return next((condition for condition in conditions if condition.type == "ScalingActive"), None)

    # The controller's default sync period is 15 s.
    condition = wait_until(active_condition, timeout=45, message="the HPA controller to evaluate the HPA")
    assert (condition.status, condition.reason) == ("False", "FailedGetExternalMetric"), condition


def _imagefleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("imagefleet")), *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((processes.HOST, port)) == 0


@pytest.mark.slow
def test_up_recovers_from_a_crash_and_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    kubeconfig = tmp_path / "kubeconfig"
    first = _imagefleet("dev", "up", "--state-dir", str(state_dir), "--kubeconfig", str(kubeconfig))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(kubeconfig)
    state = json.loads((state_dir / "state.json").read_text())
    # A crash: etcd dies and `up` is run again over the leftovers.
    processes.stop(state["pids"]["etcd"])
    second = _imagefleet("dev", "up", "--state-dir", str(state_dir), "--kubeconfig", str(kubeconfig))
    assert second.returncode == 0, second.stderr
    assert "cleaning up an earlier control plane" in second.stderr
    assert not any(processes.alive(pid) for pid in state["pids"].values())
    state = json.loads((state_dir / "state.json").read_text())
    kubectl = build.binaries([components.KUBECTL])["kubectl"]
    subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "nodes"], check=True, capture_output=True)

    down = _imagefleet("dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not any(processes.alive(pid) for pid in state["pids"].values())
    assert not any(_listening(port) for port in state["ports"].values())
    assert not kubeconfig.exists()


def test_up_refuses_a_taken_port_and_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((processes.HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _imagefleet("dev", "up", "--state-dir", str(tmp_path), "--apiserver-port", str(port))
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and f"port {port}" in error_lines[0] and "--apiserver-port 0" in error_lines[0]
    assert not (tmp_path / "state.json").exists()


def test_up_without_go_says_what_to_do(tmp_path: Path) -> None:
    env = {"IMAGEFLEET_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    if Path("/usr/bin/go").exists():
        pytest.skip("go is installed in /usr/bin")
    result = _imagefleet("dev", "up", "--state-dir", str(tmp_path / "state"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Go is not on PATH")


def test_a_failing_build_is_reported_with_its_log(tmp_path: Path) -> None:
    # No module proxy and an empty module cache: the download fails for real.
    env = {
        "IMAGEFLEET_CACHE_DIR": str(tmp_path / "cache"),
        "GOPROXY": "off",
        "GOMODCACHE": str(tmp_path / "modcache"),
    }
    result = _imagefleet("dev", "up", "--state-dir", str(tmp_path / "state"), env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: building etcd") and "full log:" in last
    assert not (tmp_path / "state" / "state.json").exists()
