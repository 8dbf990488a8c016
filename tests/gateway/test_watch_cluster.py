"""The gateway's watch and demand signal against the real kube-apiserver: resources and EndpointSlices
reach the cache within a second, without any API call per request; the annotation lands on the
resource. EndpointSlices here hold TEST-NET-1 addresses as data only: no poller runs, nothing is sent."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.gateway.service import Gateway, Settings
from imagefleet.gateway.watch import DEMAND_ANNOTATION, FleetWatch, demand_signaller
from imagefleet.kube import Kube
from tests.conftest import Cluster
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once

pytestmark = pytest.mark.usefixtures("imd_crd")
SEEN_WITHIN_SECONDS = 1.0


def imd(name: str, **routing: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "bulk", "routing": routing}}


def endpoint_slice(name: str, service: str, address: str, ready: bool) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}]}


async def seen(condition: Any, what: str, within: float = SEEN_WITHIN_SECONDS) -> float:
    """Seconds until `condition()` held; fails after `within`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"the gateway did not see {what} within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_watch_feeds_the_cache_and_a_restart_lists_it_again(cluster: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster.api_client)
    discovery = client.DiscoveryV1Api(cluster.api_client)
    kube = Kube(cluster.api_client)
    gateway = Gateway(Settings())  # not started: no load poller, nothing sent to the slice addresses
    watch = FleetWatch(gateway, kube, [namespace])
    await watch.start()
    await seen(lambda: watch.synced, "the first lists", within=10)
    key = (namespace, "thumbs")

    await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                            imd("thumbs", group="sdxl"))
    await seen(lambda: key in gateway.fleet.resources and gateway.fleet.resources[key].group == "sdxl", "the resource")
    await asyncio.to_thread(discovery.create_namespaced_endpoint_slice, namespace,
                            endpoint_slice("thumbs-abc", "thumbs", "192.0.2.10", ready=True))
    await seen(lambda: gateway.fleet.endpoints(gateway.fleet.resources[key]) == ("http://192.0.2.10:8000",),
               "the ready endpoint")
    await asyncio.to_thread(discovery.patch_namespaced_endpoint_slice, "thumbs-abc", namespace,
                            {"endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": False}}]})
    await seen(lambda: gateway.fleet.endpoints(gateway.fleet.resources[key]) == (), "the endpoint turn unready")
    await asyncio.to_thread(custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "thumbs")
    await seen(lambda: key not in gateway.fleet.resources, "the resource deleted")
    await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                            imd("renders", group="sdxl"))
    await seen(lambda: (namespace, "renders") in gateway.fleet.resources, "the second resource")
    await watch.stop()

    restarted = Gateway(Settings())  # a gateway restart: everything comes back from the API server
    again = FleetWatch(restarted, kube, [namespace])
    await again.start()
    await seen(lambda: again.synced, "the lists after a restart", within=10)
    assert restarted.fleet.resources == gateway.fleet.resources
    await again.stop()


async def test_demand_annotation_is_written_on_the_resource(cluster: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster.api_client)
    await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, imd("cold"))
    gateway = Gateway(Settings())
    watch = FleetWatch(gateway, Kube(cluster.api_client), [namespace])
    await watch.start()
    await seen(lambda: (namespace, "cold") in gateway.fleet.resources, "the resource", within=10)
    before = datetime.now(UTC)
    await demand_signaller(Kube(cluster.api_client))(gateway.fleet.resources[(namespace, "cold")])
    obj = await asyncio.to_thread(custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "cold")
    stamp = obj["metadata"]["annotations"][DEMAND_ANNOTATION]
    assert stamp.endswith("Z") and "." in stamp  # RFC 3339, UTC, fractional seconds
    written = datetime.fromisoformat(stamp)
    assert before <= written <= datetime.now(UTC)
    await watch.stop()


def test_overflow_to_itself_is_refused_naming_the_field(cluster: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster.api_client)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, imd("loop", overflowTo="loop"))
    assert refused.value.status == 422
    assert "spec.routing.overflowTo" in str(refused.value.body)
