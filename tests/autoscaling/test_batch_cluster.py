"""Batched reads against the real local control plane and a real Prometheus.

One round evaluates every autoscaled resource (`Autoscaler.evaluate_round`, as the
operator's round daemon calls it at the start of each interval); the queries it sends are counted in
Prometheus's own `prometheus_http_requests_total{handler="/api/v1/query"}`. The
series come from the synthetic exporters (tests/autoscaling/exporter.py) in the
LocalPrometheus file-targets job, one per resource.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from kubernetes import client, config

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling import batch, loop, queries
from imagefleet.autoscaling.loop import Autoscaler
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.catalog import load_gpu_classes
from imagefleet.demo.stack import install_crd
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.kube import Kube
from imagefleet.metrics import QUEUE_DEPTH
from tests.autoscaling.exporter import Exporter
from tests.autoscaling.test_loop import deployment, imd
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

INTERVAL = 5.0
QUERY_HANDLER = "/api/v1/query"


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    install_crd(cluster.api_client)
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval="1s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def autoscaler(cluster: Cluster, prometheus: LocalPrometheus) -> AsyncIterator[Autoscaler]:
    kube = Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    async with PrometheusClient(prometheus.url, timeout=5.0) as metrics:
        yield Autoscaler(kube, metrics, load_gpu_classes(), interval_seconds=INTERVAL)
    kube.close()


def query_requests(prometheus: LocalPrometheus) -> float:
    """Instant queries Prometheus has answered so far, from its own /metrics."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(r'^prometheus_http_requests_total\{([^}]*)\} (\S+)$', re.MULTILINE)
    return sum(float(value) for labels, value in pattern.findall(text) if f'handler="{QUERY_HANDLER}"' in labels)


def rounds_observed() -> float:
    """How many rounds the operator's round-duration histogram has counted."""
    (family,) = loop.ROUND_SECONDS.collect()
    return next(sample.value for sample in family.samples if sample.name.endswith("_count"))


def create(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, imd(name, "cpu", max_replicas=4)
    )
    # The stand-in Deployment of test_loop, on the cpu class's nodes: no GPU to wait for.
    manifest = deployment(name, "h100-80gb", created["metadata"]["uid"])
    pod = manifest["spec"]["template"]["spec"]
    del pod["containers"][0]["resources"]
    cpu = load_gpu_classes()["cpu"]
    pod["nodeSelector"], pod["tolerations"] = dict(cpu.node_selector), [dict(t) for t in cpu.tolerations]
    client.AppsV1Api(cluster.api_client).create_namespaced_deployment(namespace, manifest)
    return created


def labels(namespace: str, name: str, **more: str) -> dict[str, str]:
    return {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: name, **more}


def seen(prometheus: LocalPrometheus, namespace: str, series: int) -> bool:
    """Whether Prometheus has scraped `series` queue-depth series in the namespace."""
    async def read() -> int:
        async with PrometheusClient(prometheus.url) as metrics:
            return len(await metrics.query(f'{QUEUE_DEPTH}{{{queries.NAMESPACE_LABEL}="{namespace}"}}'))

    return asyncio.run(read()) == series


async def one_round(autoscaler: Autoscaler, prometheus: LocalPrometheus,
                    resources: list[dict[str, Any]]) -> tuple[float, list[Any]]:
    """Evaluate every resource at the start of one interval; the queries Prometheus answered meanwhile."""
    await asyncio.sleep(autoscaler.next_round_in())
    before = query_requests(prometheus)
    decisions = await autoscaler.evaluate_round(resources)
    return query_requests(prometheus) - before, decisions


@pytest.mark.parametrize("count", [2, 20])
async def test_one_round_sends_the_same_queries_for_2_and_20_resources(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, autoscaler: Autoscaler, count: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = [f"r{index:02d}" for index in range(count)]
    resources = [create(cluster, namespace, name) for name in names]
    exporters = [Exporter() for _ in names]
    try:
        for index, exporter in enumerate(exporters):
            exporter.queue_depth.set(index % 3)
        prometheus.set_targets([Target(e.address, labels(namespace, n)) for e, n in zip(exporters, names, strict=True)])
        await asyncio.to_thread(wait_until, lambda: seen(prometheus, namespace, count), timeout=60,
                                message=f"Prometheus to scrape {count} exporters")
        # A first round learns the scrape intervals (the targets API, not a query); then count one.
        await one_round(autoscaler, prometheus, resources)
        rounds_before = rounds_observed()
        caplog.set_level(logging.INFO, logger=loop.__name__)
        caplog.clear()
        sent, decisions = await one_round(autoscaler, prometheus, resources)
        assert sent == len(batch.batch_queries("{}", 20.0)), f"{count} resources: {sent} queries in one round"
        # The round's duration is on the operator's /metrics, and one line says what the round did.
        assert rounds_observed() == rounds_before + 1
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("autoscaling round:")]
        found = loop.ROUND_LINE.fullmatch(line)  # the pattern the fleet benchmark reads rounds with
        assert found is not None and (found["resources"], found["scaled"]) == (str(count), "0"), line
        for name, decision in zip(names, decisions, strict=True):
            assert decision is not None and decision.metrics_available, (name, decision)
        # Each resource decided from its own slice: queue depth index % 3 at 2 per replica -> 1 replica.
        custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        for index, name in enumerate(names):
            status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["status"]
            assert status["queueDepth"] == index % 3, (name, status)
    finally:
        prometheus.set_targets([])
        for exporter in exporters:
            exporter.close()


async def test_series_of_a_foreign_job_collide_and_are_reported_not_summed(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, autoscaler: Autoscaler
) -> None:
    resources = [create(cluster, namespace, name) for name in ("own", "clash")]
    exporters = [Exporter() for _ in range(3)]
    try:
        for exporter in exporters:
            exporter.queue_depth.set(1)
        prometheus.set_targets([
            Target(exporters[0].address, labels(namespace, "own")),
            Target(exporters[1].address, labels(namespace, "clash")),
            Target(exporters[2].address, labels(namespace, "clash", job="foreign-exporter")),
        ])
        await asyncio.to_thread(wait_until, lambda: seen(prometheus, namespace, 3), timeout=60,
                                message="Prometheus to scrape the exporters")
        _, (own, clash) = await one_round(autoscaler, prometheus, resources)
        assert own is not None and own.metrics_available
        assert clash is not None and not clash.metrics_available and clash.desired == 1
        custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "clash")["status"]
        available = c.find(status["conditions"], c.METRICS_AVAILABLE)
        assert available is not None
        assert (available["status"], available["reason"]) == (c.FALSE, loop.SERIES_COLLIDE)
        assert "foreign-exporter" in available["message"] and "not summed" in available["message"]
        assert "queueDepth" not in status
    finally:
        prometheus.set_targets([])
        for exporter in exporters:
            exporter.close()
