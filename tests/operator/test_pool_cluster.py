"""A pool and its members on the local fleet, with the operator running and the chart's admission policy:
the pool's Deployment appears and turns ready, members are Ready without pods of their own, adding one
restarts nothing, `kubectl get imp` shows what a user expects, requests for each member go through the
real gateway to the pool's pod, and a member of another family is refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, POOL_KIND, POOL_PLURAL, VERSION
from imagefleet.reconcile.member import SERVED_BY_POOL
from tests.chart.conftest import helm  # noqa: F401 - the helm binary, for the policy fixture
from tests.chart.helm import kubectl_binary
from tests.conftest import Cluster
from tests.gateway.process import gateway_process
from tests.helpers import wait_until

from .harness import Imds, OperatorProcess
from .test_pool_admission_cluster import pool_admission  # noqa: F401 - the chart's policy, applied
from .test_pool_admission_cluster import wait_until_in_force


def _pool_deployment(cluster: Cluster, namespace: str) -> client.V1Deployment | None:
    try:
        return client.AppsV1Api(cluster.api_client).read_namespaced_deployment("tiny-pool-pool", namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _pool(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return client.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, POOL_PLURAL, "tiny-pool")


def _ready(imds: Imds, name: str) -> dict[str, Any] | None:
    condition = imds.condition(name, "Ready")
    return condition if condition is not None and condition["status"] == "True" else None


def test_a_pool_serves_its_members_and_refuses_another_family(
    cluster: Cluster, namespace: str, pool_admission: None, imagefleet_operator: OperatorProcess, tmp_path: Path
) -> None:
    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POOL_PLURAL,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "metadata": {"name": "tiny-pool"},
         "spec": {"family": "tiny", "gpuClass": "cpu", "replicas": 1}})
    wait_until(lambda: (_pool(cluster, namespace).get("status") or {}).get("readyReplicas") == 1, timeout=90,
               message="the pool's pod to be ready")
    before = _pool_deployment(cluster, namespace)
    assert before is not None and before.metadata.labels["imagefleet.io/pool"] == "tiny-pool"
    assert before.metadata.owner_references[0].kind == POOL_KIND
    env = {item.name: item.value for item in before.spec.template.spec.containers[0].env}
    assert env["IMAGEFLEET_POOL_FAMILY"] == "tiny" and int(env["IMAGEFLEET_GPU_BUDGET_MIB"]) > 0
    pods = client.CoreV1Api(cluster.api_client).list_namespaced_pod(
        namespace, label_selector="imagefleet.io/pool=tiny-pool").items
    assert len(pods) == 1

    imds = Imds(cluster.api_client, namespace)
    imds.create("plain", {"model": {"name": "tiny"}, "gpuClass": "cpu", "pool": "tiny-pool"})
    imds.create("pixel-art", {"model": {"name": "tiny", "adapter": {"name": "loras/pixel-art", "scale": 0.8}},
                              "gpuClass": "cpu", "tier": "premium", "pool": "tiny-pool"})
    for name in ("plain", "pixel-art"):
        ready = wait_until(lambda name=name: _ready(imds, name), timeout=60, message=f"member {name} to be Ready")
        assert ready["reason"] == SERVED_BY_POOL and "tiny-pool" in ready["message"], ready
        assert imds.get(name)["status"]["pool"] == "tiny-pool"
        with pytest.raises(ApiException) as missing:
            client.AppsV1Api(cluster.api_client).read_namespaced_deployment(name, namespace)
        assert missing.value.status == 404, f"member {name} has a Deployment of its own"
    wait_until(lambda: (_pool(cluster, namespace).get("status") or {}).get("members") == 2, timeout=30,
               message="the pool to count its 2 members")

    # Adding members restarted nothing: the same pod template, generation and pod.
    after = _pool_deployment(cluster, namespace)
    assert after is not None
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template.to_dict() == before.spec.template.to_dict()
    pods_after = client.CoreV1Api(cluster.api_client).list_namespaced_pod(
        namespace, label_selector="imagefleet.io/pool=tiny-pool").items
    assert [pod.metadata.uid for pod in pods_after] == [pod.metadata.uid for pod in pods]

    # What a kubectl user sees.
    listed = subprocess.run([kubectl_binary(), "--kubeconfig", str(cluster.kubeconfig), "get", "imagemodelpools",
                             "-n", namespace], capture_output=True, text=True, timeout=30, check=True).stdout
    header, row = listed.splitlines()[:2]
    assert header.split() == ["NAME", "FAMILY", "GPU", "READY", "DESIRED", "MEMBERS", "AGE"], listed
    assert row.split()[:6] == ["tiny-pool", "tiny", "cpu", "1", "1", "2"], listed

    # Through the real gateway: a member's name reaches the pool's pod with its checkpoint and adapter.
    with gateway_process(cluster.kubeconfig, namespace, tmp_path / "gateway.log") as gateway:
        def generate(model: str) -> httpx.Response:
            return httpx.post(f"{gateway.url}/v1/images/generations", timeout=120,
                              json={"model": model, "prompt": "a lighthouse"})

        served = generate("plain")
        assert served.status_code == 200, served.text
        assert len(served.json()["data"]) == 1
        # Its adapter is in no repo the pod can read: a 4xx naming it, and the pod keeps serving.
        refused = generate("pixel-art")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "adapter_refused" and "loras/pixel-art" in error["message"], error
        again = generate("plain")
        assert again.status_code == 200, again.text

    # A member of another family is refused when applied, naming both families.
    other = {"model": {"name": "sd15"}, "gpuClass": "cpu", "pool": "tiny-pool"}
    wait_until_in_force(cluster, namespace, other)
    with pytest.raises(ApiException) as refused:
        imds.create("sd15-here", other)
    message = json.loads(refused.value.body)["message"]
    assert "family sd15" in message and "family tiny" in message and "tiny-pool" in message, message
