"""One autoscaler for a pool, against the real local control plane and a real Prometheus.

A pool at zero with two members: the gateway's demand for one member (its per-resource series, served by
the gateway's own metric definitions) wakes the whole pool, and the pool is sized in the same round as
the autoscaled resources, with one PromQL query more than a round without it (every pool pod's
residency; Prometheus's own count). After requests to a real pool-mode runtime process (emulated engine),
each member's status says where it is resident, its requests per second and p95.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from kubernetes import client
from prometheus_client import start_http_server

from imagefleet import GROUP, PLURAL, POOL_KIND, POOL_PLURAL, VERSION
from imagefleet.autoscaling import batch
from imagefleet.autoscaling.loop import DEMAND_ANNOTATION, FIELD_MANAGER, Autoscaler, PoolWork
from imagefleet import conditions as c
from imagefleet.autoscaling.pool_members import RESIDENCY_READ
from imagefleet.autoscaling.pool_scaling import POOL_WOKEN
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.builders.labels import selector_labels
from imagefleet.catalog import load_gpu_classes
from imagefleet.dev.processes import HOST
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.gateway.telemetry import GatewayMetrics
from imagefleet.metrics import GATEWAY_ARRIVALS_TOTAL, GATEWAY_QUEUED_REQUESTS, GATEWAY_RESOURCE_SECONDS, RESIDENT
from tests.autoscaling.exporter import Exporter
from tests.autoscaling.test_batch_cluster import autoscaler, prometheus  # noqa: F401 - the fixtures, shared
from tests.autoscaling.test_batch_cluster import create, labels, one_round, query_requests
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.runtime.support import runtime_server

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def scraped_sum(prometheus: LocalPrometheus, query: str) -> float:
    """The sum of `query`'s samples, as Prometheus answers it now."""
    async def read() -> float:
        async with PrometheusClient(prometheus.url) as metrics:
            return sum(sample.value for sample in await metrics.query(query))
    return asyncio.run(read())


def _pool_and_members(cluster: Cluster, namespace: str, family: str = "tiny", gpu_class: str = "cpu",
                      models: tuple[dict[str, Any], ...] = ({"name": "tiny"}, {"name": "tiny"}),
                      autoscaling: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    pool = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "metadata": {"name": "shared"},
        "spec": {"family": family, "gpuClass": gpu_class, "autoscaling": {
            "enabled": autoscaling, "minReplicas": 0, "maxReplicas": 4, "scaleDownStabilizationSeconds": 60}}})
    members = [custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
        "spec": {"model": model, "gpuClass": gpu_class, "pool": "shared"}})
        for name, model in zip(("alpha", "beta"), models, strict=True)]
    # The operator's <pool>-pool Deployment, at zero, owned by the pool (what the autoscaler scales).
    cpu = load_gpu_classes()["cpu"]
    selector = selector_labels("shared-pool")
    client.AppsV1Api(cluster.api_client).create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shared-pool", "labels": selector, "ownerReferences": [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "name": "shared",
            "uid": pool["metadata"]["uid"], "controller": True}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": selector}, "template": {
            "metadata": {"labels": selector},
            "spec": {"nodeSelector": dict(cpu.node_selector), "tolerations": [dict(t) for t in cpu.tolerations],
                     "containers": [{"name": "runtime", "image": "example.invalid/imagefleet-runtime:test"}]}}}})
    return pool, members


async def test_members_demand_wakes_and_sizes_the_pool_with_no_query_of_its_own(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, autoscaler: Autoscaler
) -> None:
    resource = create(cluster, namespace, "solo")
    pool, members = _pool_and_members(cluster, namespace)
    work = PoolWork(pool, tuple(members))
    pod = Exporter()
    gateway = GatewayMetrics()
    server, thread = start_http_server(0, addr=HOST, registry=gateway.registry)
    try:
        pod.queue_depth.set(0)
        prometheus.set_targets([Target(pod.address, labels(namespace, "solo")),
                                Target(f"{HOST}:{server.server_port}", {"job": "gateway"})])

        async def series() -> int:
            async with PrometheusClient(prometheus.url) as metrics:
                return len(await metrics.query(f'{GATEWAY_ARRIVALS_TOTAL}{{resource_namespace="{namespace}"}}'))

        gateway.arrivals.labels(namespace, "alpha").inc(0)
        await asyncio.to_thread(wait_until, lambda: asyncio.run(series()) == 1, timeout=60,
                                message="Prometheus to scrape the gateway")
        # A first round learns the scrape intervals; the next ones are counted.
        await one_round(autoscaler, prometheus, [resource])
        alone, _ = await one_round(autoscaler, prometheus, [resource])
        assert alone == len(batch.batch_queries("{}", 20.0))

        # The gateway holds two requests for beta and takes some for alpha: the pool at zero wakes.
        gateway.queued.labels(namespace, "beta").set(2)
        for _ in range(20):
            gateway.arrivals.labels(namespace, "alpha").inc()
        demand = f'{{resource_namespace="{namespace}"}}'
        await asyncio.to_thread(wait_until, lambda: scraped_sum(prometheus, GATEWAY_ARRIVALS_TOTAL + demand) == 20
                                and scraped_sum(prometheus, GATEWAY_QUEUED_REQUESTS + demand) == 2, timeout=30,
                                message="Prometheus to scrape the new demand")
        await asyncio.sleep(autoscaler.next_round_in())
        before = query_requests(prometheus)
        decisions = await autoscaler.evaluate_round([resource], [work])
        sent = query_requests(prometheus) - before
        assert sent == alone + 1, f"the pool added {sent - alone} queries to the round, not one (its residency)"
        assert decisions[0] is not None
        live = client.AppsV1Api(cluster.api_client).read_namespaced_deployment("shared-pool", namespace)
        assert live.spec.replicas >= 1
        custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, "shared")["status"]
        assert status["desiredReplicas"] == live.spec.replicas and "lastScaleTime" in status
        assert status["autoscaling"]["activeMembers"] == 2 and status["autoscaling"]["demandGpuSeconds"] > 0
        events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=shared")
        assert any(event.reason == POOL_WOKEN for event in events.items), [e.reason for e in events.items]
    finally:
        prometheus.set_targets([])
        pod.close()
        server.shutdown()
        server.server_close()
        thread.join()


async def test_fresh_gateway_demand_on_a_member_wakes_the_pool_between_rounds(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, autoscaler: Autoscaler
) -> None:
    pool, _ = _pool_and_members(cluster, namespace)
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))

    def annotated(at: datetime) -> dict[str, Any]:
        return custom.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, "alpha",
            {"metadata": {"annotations": {DEMAND_ANNOTATION: at.isoformat()}}})

    stale = annotated(datetime.now(UTC) - timedelta(hours=1))
    assert not await autoscaler.wake_pool(pool, stale)
    apps = client.AppsV1Api(cluster.api_client)
    assert apps.read_namespaced_deployment("shared-pool", namespace).spec.replicas == 0
    fresh = annotated(datetime.now(UTC))
    assert await autoscaler.wake_pool(pool, fresh)
    assert apps.read_namespaced_deployment("shared-pool", namespace).spec.replicas == 1
    status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, "shared")["status"]
    assert status["desiredReplicas"] == 1
    events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=shared").items
    assert any(event.reason == POOL_WOKEN and "alpha" in event.message for event in events)
    # Awake already: a second demand does not patch again.
    assert not await autoscaler.wake_pool(pool, fresh)


# One SDXL UNet (4,896 MiB at fp16) fits the pod's GPU budget and one its host RAM (emulated: SDXL on an H100,
# every duration divided by the speedup).
EMULATED_POOL = ("--engine", "emulated", "--gpu-class", "h100-80gb", "--model", "sdxl", "--precision", "fp16",
                 "--pool-family", "sdxl", "--gpu-budget-mib", "5000", "--host-budget-mib", "5000",
                 "--emulation-speedup", "20", "--default-steps", "4")


def _member_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


@pytest.mark.parametrize("autoscaling", [True, False], ids=["autoscaled", "fixed"])
async def test_a_members_status_shows_where_it_is_resident_after_a_request(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, autoscaler: Autoscaler, tmp_path: Path,
    autoscaling: bool,
) -> None:
    """A real pool-mode runtime process is the pool's pod: a request for alpha, then one for beta, leave beta
    on its GPU and alpha in its host RAM, and the round writes that, with each member's requests and p95
    (the gateway's series, its own metric definitions, timed from the real requests), into their status;
    a pool without autoscaling is not scaled, and its members get the same status."""
    pool, members = _pool_and_members(cluster, namespace, "sdxl", "h100-80gb", (
        {"name": "org/fine-a", "family": "sdxl"}, {"name": "org/fine-b", "family": "sdxl"}), autoscaling)
    gateway = GatewayMetrics()
    server, thread = start_http_server(0, addr=HOST, registry=gateway.registry)
    pod_name = "shared-pool-7d9f-x2x"
    try:
        with runtime_server(tmp_path, *EMULATED_POOL) as pod:
            address = pod.metrics_address
            prometheus.set_targets([Target(address, labels(namespace, "shared-pool", pod=pod_name)),
                                    Target(f"{HOST}:{server.server_port}", {"job": "gateway"})])
            for member in ("alpha", "beta"):  # zero first, so that rate() sees the requests
                gateway.arrivals.labels(namespace, member).inc(0)
                gateway.resource_seconds.labels(namespace, member)

            async def scraped() -> bool:
                async with PrometheusClient(prometheus.url) as metrics:
                    return len(await metrics.query(f'{GATEWAY_ARRIVALS_TOTAL}{{resource_namespace="{namespace}"}}'
                                                   )) == 2 and len(await metrics.query(
                        f'imagefleet_queue_depth{{imagefleet_io_name="shared-pool",pod="{pod_name}"}}')) == 1

            await asyncio.to_thread(wait_until, lambda: asyncio.run(scraped()), timeout=60,
                                    message="Prometheus to scrape the gateway and the pool's pod")
            for member, checkpoint in (("alpha", "org/fine-a"), ("beta", "org/fine-b")):
                started = time.monotonic()
                answer = await asyncio.to_thread(httpx.post, f"{pod.base_url}/v1/images/generations", json={
                    "prompt": "a lighthouse", "checkpoint": {"name": checkpoint}}, timeout=60)
                assert answer.status_code == 200, answer.text
                gateway.arrivals.labels(namespace, member).inc()
                gateway.resource_seconds.labels(namespace, member).observe(time.monotonic() - started)
            demand = f'{{resource_namespace="{namespace}"}}'
            await asyncio.to_thread(
                wait_until, lambda: scraped_sum(prometheus, GATEWAY_ARRIVALS_TOTAL + demand) == 2
                and scraped_sum(prometheus, f"{GATEWAY_RESOURCE_SECONDS}_count{demand}") == 2
                and scraped_sum(prometheus, f'{RESIDENT}{{pod="{pod_name}",checkpoint="org/fine-b",place="gpu"}}') == 1,
                timeout=30, message="Prometheus to scrape both requests and beta on the pod's GPU")
            await asyncio.sleep(autoscaler.next_round_in())
            await autoscaler.evaluate_round([], [PoolWork(pool, tuple(members))])
            replicas = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(
                "shared-pool", namespace).spec.replicas
            # The arrivals wake an autoscaled pool at zero; a fixed one stays as its spec says.
            assert replicas >= 1 if autoscaling else replicas == 0

            alpha, beta = (_member_status(cluster, namespace, name) for name in ("alpha", "beta"))
            assert beta["residency"] == {"gpuPods": 1, "hostPods": 0, "gpu": [pod_name]}, beta
            assert alpha["residency"] == {"gpuPods": 0, "hostPods": 1, "host": [pod_name]}, alpha
            for status in (alpha, beta):
                assert status["requestsPerSecond"] > 0 and status["p95Seconds"] > 0, status
                condition = c.find(status["conditions"], c.METRICS_AVAILABLE)
                assert condition is not None and condition["status"] == c.TRUE, condition
                assert condition["reason"] == RESIDENCY_READ
            # Written under the autoscaler's own field manager, not the operator's.
            assert FIELD_MANAGER in {entry["manager"] for entry in _managed_fields(cluster, namespace, "alpha")}
    finally:
        prometheus.set_targets([])
        server.shutdown()
        server.server_close()
        thread.join()


def _managed_fields(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return [entry for entry in body["metadata"].get("managedFields") or ()
            if entry.get("subresource") == "status"]
