"""Finding 7: a gateway that is stopped answers what it has accepted.

Attack (a rollout, or an eviction, is enough): a client's request is held while its resource has no
ready pod; the gateway process gets SIGTERM; then a pod becomes ready. The gateway, no longer
accepting connections, still routes the held request to it and answers 200, then exits: nothing the
client sent is lost or has to be sent again (which the official client would do, generating twice).
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.gateway.fleet import SERVICE_NAME_LABEL
from tests.conftest import Cluster
from tests.gateway.support import gateway_process
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once
from tests.runtime.support import RunningServer

pytestmark = pytest.mark.slow


def test_a_held_request_is_answered_after_sigterm(
    cluster: Cluster, imd_crd: None, namespace: str, tmp_path: Path, bulk_pod: RunningServer
) -> None:
    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": "thumbs"},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "replicas": 0}})
    with gateway_process(cluster.kubeconfig, tmp_path / "gateway.log", "--namespaces", namespace) as gateway, \
            ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, f"{gateway.url}/v1/images/generations", timeout=60,
                           json={"model": "thumbs", "prompt": "x", "size": "64x64"})
        wait_until(lambda: _demand_signalled(cluster, namespace), timeout=30, message="the request to be held")
        gateway.process.send_signal(signal.SIGTERM)
        wait_until(lambda: _refused(gateway.url), timeout=10, message="the gateway to stop accepting")
        host, port = bulk_pod.base_url.split("//")[1].rsplit(":", 1)
        client.DiscoveryV1Api(cluster.api_client).create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": "thumbs-1", "labels": {SERVICE_NAME_LABEL: "thumbs"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": int(port)}],
            "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]})
        answer = held.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert gateway.process.wait(timeout=30) == -signal.SIGTERM  # drained, then ended by the signal it got


def _demand_signalled(cluster: Cluster, namespace: str) -> bool:
    obj = client.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "thumbs")
    return "imagefleet.io/demand-at" in (obj["metadata"].get("annotations") or {})


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False
