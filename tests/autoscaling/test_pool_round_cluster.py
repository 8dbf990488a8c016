"""One autoscaler for a pool, against the real local control plane and a real Prometheus.

A pool at zero with two members: the gateway's demand for one member (its per-resource series, served by
the gateway's own metric definitions) wakes the whole pool, and the pool is sized in the same round as
the autoscaled resources, with the same PromQL queries as a round without it (Prometheus's own count).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes import client
from prometheus_client import start_http_server

from imagefleet import GROUP, PLURAL, POOL_KIND, POOL_PLURAL, VERSION
from imagefleet.autoscaling import batch
from imagefleet.autoscaling.loop import DEMAND_ANNOTATION, Autoscaler, PoolWork
from imagefleet.autoscaling.pool_scaling import POOL_WOKEN
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.builders.labels import selector_labels
from imagefleet.catalog import load_gpu_classes
from imagefleet.dev.processes import HOST
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.gateway.telemetry import GatewayMetrics
from imagefleet.metrics import GATEWAY_ARRIVALS_TOTAL
from tests.autoscaling.exporter import Exporter
from tests.autoscaling.test_batch_cluster import autoscaler, prometheus  # noqa: F401 - the fixtures, shared
from tests.autoscaling.test_batch_cluster import create, labels, one_round, query_requests
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def _pool_and_members(cluster: Cluster, namespace: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    pool = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "metadata": {"name": "shared"},
        "spec": {"family": "tiny", "gpuClass": "cpu", "autoscaling": {
            "enabled": True, "minReplicas": 0, "maxReplicas": 4, "scaleDownStabilizationSeconds": 60}}})
    members = [custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "pool": "shared"}}) for name in ("alpha", "beta")]
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
        await asyncio.sleep(3)  # two scrapes at 1 s
        await asyncio.sleep(autoscaler.next_round_in())
        before = query_requests(prometheus)
        decisions = await autoscaler.evaluate_round([resource], [work])
        sent = query_requests(prometheus) - before
        assert sent == alone, f"the pool added {sent - alone} queries to the round"
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
