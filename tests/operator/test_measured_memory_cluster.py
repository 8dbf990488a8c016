"""Measured memory on the real local control plane and a real Prometheus.

Exporters with the runtime's own metric definitions (tests/autoscaling/exporter.py) stand in for
runtime pods: one reports a card's figures (source cuda, as the runtime does on a GPU; there is no
GPU here), one a process's (as on CPU and with the emulated engine), two collide. The estimate is
written into status.memory as the reconciler writes it. One round reads them with one query
(counted in Prometheus's own request metrics), writes status.measuredMemory and posts
MemoryEstimateLow once; a second round with nothing new writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from kubernetes import client, config

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.kube import Kube
from imagefleet.measuredmemory.plan import CUDA, ESTIMATE_LOW, PROCESS
from imagefleet.measuredmemory.reporter import MemoryReporter
from imagefleet.metrics import MEMORY_BYTES
from imagefleet_runtime.memory import MemoryReading
from tests.autoscaling.exporter import Exporter
from tests.autoscaling.test_batch_cluster import labels, prometheus, query_requests  # noqa: F401 - a fixture
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

MIB = 1024 * 1024
ESTIMATE = {"estimateMiB": 10_000, "limitMiB": 20_000, "capacityMiB": 22_000}


@pytest.fixture
async def reporter(cluster: Cluster, prometheus: LocalPrometheus) -> AsyncIterator[MemoryReporter]:
    kube = Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    reporter = MemoryReporter(kube, PrometheusClient(prometheus.url, timeout=5.0))
    yield reporter
    await reporter.aclose()


def resource(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name},
            "spec": {"model": {"name": "sd15"}, "precision": "fp16", "gpuClass": "a100-80gb"}}


def memory_series(prometheus: LocalPrometheus, namespace: str) -> int:
    async def read() -> int:
        async with PrometheusClient(prometheus.url) as metrics:
            return len(await metrics.query(f'{MEMORY_BYTES}{{kind="peak",namespace="{namespace}"}}'))

    return asyncio.run(read())


async def test_a_round_writes_measured_memory_and_warns_once_when_the_estimate_was_low(
    cluster: Cluster, namespace: str, prometheus: LocalPrometheus, reporter: MemoryReporter
) -> None:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    core: Any = cast(Any, client.CoreV1Api(cluster.api_client))
    names = ("gpu", "cpu", "clash")
    for name in names:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource(name))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                     {"status": {"memory": ESTIMATE}})
    exporters = [Exporter() for _ in range(4)]
    exporters[0].metrics.record_memory(MemoryReading(CUDA, 9_000 * MIB, 13_000 * MIB, 12_000 * MIB))
    exporters[1].metrics.record_memory(MemoryReading(PROCESS, 700 * MIB, None, 31_000 * MIB))
    for exporter in exporters[2:]:
        exporter.metrics.record_memory(MemoryReading(CUDA, 1 * MIB, 1 * MIB, 50_000 * MIB))

    def listed() -> list[dict[str, Any]]:
        return list(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])

    def warnings(name: str) -> list[str]:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [event.message for event in events if event.reason == ESTIMATE_LOW and event.type == "Warning"]

    try:
        prometheus.set_targets([
            Target(exporters[0].address, labels(namespace, "gpu")),
            Target(exporters[1].address, labels(namespace, "cpu")),
            Target(exporters[2].address, labels(namespace, "clash")),
            Target(exporters[3].address, labels(namespace, "clash", job="foreign-exporter")),
        ])
        await asyncio.to_thread(wait_until, lambda: memory_series(prometheus, namespace) == 4, timeout=60,
                                message="Prometheus to scrape the four exporters")
        before = query_requests(prometheus)
        assert await reporter.round(listed()) == 2
        assert query_requests(prometheus) - before == 1

        statuses = {item["metadata"]["name"]: item.get("status") or {} for item in listed()}
        assert {k: v for k, v in statuses["gpu"]["measuredMemory"].items() if k != "observedTime"} == \
            {"peakMiB": 12_000, "source": CUDA}
        assert statuses["gpu"]["memory"] == ESTIMATE  # the estimate's owner keeps its fields
        assert statuses["cpu"]["measuredMemory"]["source"] == PROCESS
        assert statuses["cpu"]["measuredMemory"]["peakMiB"] == 31_000
        assert "measuredMemory" not in statuses["clash"]
        [message] = await asyncio.to_thread(wait_until, lambda: warnings("gpu"), timeout=10,
                                            message="a MemoryEstimateLow Event")
        assert "12,000 MiB" in message and "estimate of 10,000 MiB" in message
        assert warnings("cpu") == [] and warnings("clash") == []

        # Nothing new: no write and no second Event, even from a fresh reporter that knows only the status.
        fresh = MemoryReporter(reporter.kube, reporter.prometheus)
        assert await fresh.round(listed()) == 0
        assert await reporter.round(listed()) == 0
        assert len(warnings("gpu")) == 1
    finally:
        prometheus.set_targets([])
        for exporter in exporters:
            exporter.close()
