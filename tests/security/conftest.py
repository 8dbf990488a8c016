"""The security suite reuses the gateway tests' runtime processes (tiny model, CPU, loopback), and
has one at an address of the local fleet's pod range, for an EndpointSlice the real API server
accepts (it refuses 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.dev.components import SIMULATED_POD_CIDR
from tests.conftest import Cluster
from tests.gateway.conftest import FAST, bulk_pod, premium_pod  # noqa: F401
from tests.runtime.support import RunningServer, runtime_server

# In the fleet's pod range, far above the addresses KWOK gives pods (from the bottom of the range).
FLEET_POD_ADDRESS = SIMULATED_POD_CIDR.replace("0.0/16", "254.1")


@pytest.fixture(scope="session")
def fleet_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A tiny-model runtime on CPU at FLEET_POD_ADDRESS, ready."""
    with runtime_server(tmp_path_factory.mktemp("fleet-pod"), *FAST, "--max-batch-size", "4", "--queue-size", "64",
                        host=FLEET_POD_ADDRESS) as server:
        yield server


def thumbs_served_by(pod: RunningServer, cluster: Cluster, namespace: str) -> None:
    """A bulk `thumbs` resource (tiny, cpu) whose one ready endpoint is `pod`, as the real API server
    holds them: the gateway's watches see it as they would see the operator's."""
    custom, discovery = client.CustomObjectsApi(cluster.api_client), client.DiscoveryV1Api(cluster.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": "thumbs"},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "bulk"}})
    host, port = pod.base_url.split("//")[1].rsplit(":", 1)
    discovery.create_namespaced_endpoint_slice(namespace, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "thumbs-pod", "labels": {"kubernetes.io/service-name": "thumbs"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": int(port), "protocol": "TCP"}],
        "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]})
