"""End to end: the operator (`imagefleet run`) against the local control plane, a real
Prometheus scraping real `imagefleet-runtime` processes (model `tiny` on CPU), and a
burst of real requests.

The runtime processes stand in for the pods' endpoints (the simulated GPU nodes run
no containers): Prometheus scrapes them with the contract labels of the resource.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any, cast

import pytest
from kubernetes import client

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling import loop, policy, queries
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.bench.load import Plan, request_body, run_load
from imagefleet.demo.runtimes import RuntimeProcess, start_runtime
from imagefleet.demo.stack import install_crd
from imagefleet.dev import processes
from imagefleet.dev.prometheus import LocalPrometheus, Target
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

INTERVAL = 2.0
SAMPLE_SECONDS = 0.25
DOWN_WINDOW = 20
NAME = "e2e"
BURST_SECONDS = 20.0
CONCURRENCY_PER_RUNTIME = 10
BODY = request_body(prompt="a lighthouse at dusk", size="64x64", steps=4)
RUNTIME_SETTINGS = {"IMAGEFLEET_MAX_BATCH_SIZE": "1", "IMAGEFLEET_QUEUE_SIZE": "64"}


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RuntimeProcess]]:
    logs = tmp_path_factory.mktemp("runtimes")
    started = [start_runtime(logs / f"runtime-{i}.log", settings=RUNTIME_SETTINGS) for i in range(2)]
    try:
        for runtime in started:
            runtime.wait_ready()
        yield started
    finally:
        for runtime in started:
            runtime.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[LocalPrometheus]:
    server = LocalPrometheus(tmp_path / "prometheus", scrape_interval="1s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator(cluster: Cluster, namespace: str, prometheus: LocalPrometheus, tmp_path: Path) -> Iterator[Popen[bytes]]:
    install_crd(cluster.api_client)
    log = tmp_path / "operator.log"
    process = processes.start(
        [sys.executable, "-m", "imagefleet", "run"],
        log,
        env={
            "KUBECONFIG": str(cluster.kubeconfig),
            "IMAGEFLEET_PROMETHEUS_URL": prometheus.url,
            "IMAGEFLEET_NAMESPACES": namespace,
            "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(INTERVAL),
        },
    )
    try:
        yield process
    finally:
        processes.stop(process.pid)
        process.wait()
        print(f"--- operator log ({log}) ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:]))


def resource(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny"},
            "precision": "fp32",
            "gpuClass": "a100-80gb",
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetQueueDepth": 2,
                "targetP95Seconds": 600,
                "scaleDownStabilizationSeconds": DOWN_WINDOW,
            },
        },
    }


class View:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.namespace = namespace
        self.custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        self.apps: Any = cast(Any, client.AppsV1Api(cluster.api_client))
        self.core: Any = cast(Any, client.CoreV1Api(cluster.api_client))

    def status(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, NAME)
        return dict(found.get("status") or {})

    def condition(self, type_: str) -> dict[str, Any]:
        return dict(c.find(self.status().get("conditions"), type_) or {})

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment(NAME, self.namespace).spec.replicas)

    def events(self) -> list[tuple[str, str]]:
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={NAME},involvedObject.kind={KIND}"
        ).items
        ordered = sorted(listed, key=lambda e: (e.metadata.creation_timestamp, e.metadata.name))
        return [(e.reason, e.message) for e in ordered]


def queue_seen(url: str, namespace: str) -> float | None:
    async def read() -> float | None:
        async with PrometheusClient(url) as metrics:
            return await metrics.value(queries.queue_depth_query(namespace, NAME))

    return asyncio.run(read())


def burst(runtimes: list[RuntimeProcess]) -> None:
    async def load() -> None:
        plan = Plan(concurrency=CONCURRENCY_PER_RUNTIME, duration_s=BURST_SECONDS)
        await asyncio.gather(*(run_load(runtime.url, BODY, plan) for runtime in runtimes))

    asyncio.run(load())


def trace_until_min(view: View, url: str, namespace: str) -> list[tuple[float, float, int]]:
    """(time, queue Prometheus reports, Deployment replicas) until the Deployment is back at 1."""
    samples: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + BURST_SECONDS + DOWN_WINDOW + 20 * INTERVAL
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), queue_seen(url, namespace) or 0.0, view.replicas()))
        if samples[-1][2] == 1 and len(samples) > 1 and max(r for _, _, r in samples) > 1:
            return samples
        time.sleep(SAMPLE_SECONDS)
    raise AssertionError(f"the Deployment did not come back to 1 replica; samples {samples[-10:]}")


def hold_for(seconds: float, check: Any) -> None:
    """`check()` holds at every look over `seconds` (proving that nothing moves)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()
        time.sleep(0.5)


async def test_burst_up_window_down_and_prometheus_outage(
    cluster: Cluster, namespace: str, runtimes: list[RuntimeProcess], prometheus: LocalPrometheus,
    operator: Popen[bytes],
) -> None:
    view = View(cluster, namespace)
    view.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource(namespace))
    labels = {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: NAME}
    prometheus.set_targets([Target(runtime.address, labels) for runtime in runtimes])
    await asyncio.to_thread(
        wait_until, lambda: view.condition(c.METRICS_AVAILABLE).get("status") == c.TRUE,
        timeout=60, message="MetricsAvailable=True from the operator",
    )
    assert view.replicas() == 1

    # 1. A burst: the queue rises; replicas follow within two intervals of Prometheus seeing it.
    load = asyncio.create_task(asyncio.to_thread(burst, runtimes))
    await asyncio.to_thread(
        wait_until, lambda: (queue_seen(prometheus.url, namespace) or 0) >= 6,
        timeout=30, interval=0.1, message="Prometheus to see a queue of 6 or more",
    )
    seen = time.monotonic()
    await asyncio.to_thread(
        wait_until, lambda: view.replicas() > 1, timeout=2 * INTERVAL + 1, interval=0.1,
        message="the Deployment to scale up within two evaluation intervals",
    )
    print(f"scaled up {time.monotonic() - seen:.1f}s after Prometheus saw the queue (interval {INTERVAL:g}s)")
    status = view.status()
    assert status["desiredReplicas"] > 1
    assert status["autoscaling"]["winner"] in (policy.QUEUE, policy.UTILIZATION)
    assert status["queueDepth"] > 0

    # 2. Load stops: the replicas stay for the stabilization window after the last queue
    # reading that asked for them, then come down.
    samples, _ = await asyncio.gather(asyncio.to_thread(trace_until_min, view, prometheus.url, namespace), load)
    peak = max(replicas for _, _, replicas in samples)
    peak_at = min(t for t, _, replicas in samples if replicas == peak)
    # ceil(queue / 2) >= peak: the last moment the queue alone asked for the peak.
    last_high = max(t for t, queue, _ in samples if queue > 2 * (peak - 1))
    first_drop = min(t for t, _, replicas in samples if t > peak_at and replicas < peak)
    assert first_drop - last_high >= DOWN_WINDOW - INTERVAL - SAMPLE_SECONDS, (last_high, first_drop, samples)
    print(f"first scale-down {first_drop - last_high:.1f}s after the last high queue reading (window {DOWN_WINDOW}s)")
    assert samples[-1][2] == 1
    reasons = [reason for reason, _ in view.events()]
    assert policy.SCALED_UP in reasons and policy.SCALED_DOWN in reasons
    assert reasons.index(policy.SCALED_UP) < reasons.index(policy.SCALED_DOWN)

    # 3. Another burst, then Prometheus stops: replicas hold, MetricsAvailable=False says why.
    load = asyncio.create_task(asyncio.to_thread(burst, runtimes))
    await asyncio.to_thread(
        wait_until, lambda: view.replicas() > 1, timeout=30, message="the second scale-up"
    )
    await load
    held = view.replicas()
    prometheus.stop()
    await asyncio.to_thread(
        wait_until, lambda: view.condition(c.METRICS_AVAILABLE).get("status") == c.FALSE,
        timeout=3 * INTERVAL + 10, message="MetricsAvailable=False after Prometheus stopped",
    )
    unavailable = view.condition(c.METRICS_AVAILABLE)
    assert unavailable["reason"] == loop.PROMETHEUS_UNREACHABLE
    assert f"holding {held} replicas" in unavailable["message"]
    await asyncio.to_thread(
        hold_for, DOWN_WINDOW + 2 * INTERVAL, lambda: view.replicas() == held or pytest.fail("moved without metrics")
    )

    # 4. Prometheus back: metrics flow again and scaling resumes (down to the minimum, after a window).
    prometheus.start()
    await asyncio.to_thread(
        wait_until, lambda: view.condition(c.METRICS_AVAILABLE).get("status") == c.TRUE,
        timeout=30, message="MetricsAvailable=True after Prometheus restarted",
    )
    await asyncio.to_thread(
        wait_until, lambda: view.replicas() == 1, timeout=DOWN_WINDOW + 10 * INTERVAL,
        message="scaling to resume after Prometheus came back",
    )
    for reason, message in view.events():
        print(f"event {reason}: {message}")
