"""The autoscaling loop against the real local control plane and a real Prometheus.

The test plays the round daemon: it calls `Autoscaler.evaluate` every INTERVAL seconds.
Metrics come from real HTTP exporters (the runtime's metric names) scraped by
Debian's Prometheus with the contract labels; the Deployment's pods run on the
simulated GPU nodes. No operator runs here, so every write seen is the loop's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from kubernetes import client, config

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling import loop, policy, queries
from imagefleet.autoscaling.loop import Autoscaler
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.builders.labels import selector_labels
from imagefleet.catalog import load_gpu_classes
from imagefleet.demo.stack import install_crd
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.kube import Kube
from tests.autoscaling.exporter import Exporter
from tests.conftest import Cluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

INTERVAL = 1.0
DOWN_WINDOW = 15


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    install_crd(cluster.api_client)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval="1s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def exporters(prometheus: LocalPrometheus) -> Iterator[list[Exporter]]:
    """One metrics endpoint per pod the tests may run (max 6)."""
    pods = [Exporter() for _ in range(6)]
    try:
        yield pods
    finally:
        prometheus.set_targets([])
        for pod in pods:
            pod.close()


@pytest.fixture
async def autoscaler(cluster: Cluster, prometheus: LocalPrometheus) -> AsyncIterator[Autoscaler]:
    kube = Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    async with PrometheusClient(prometheus.url, timeout=2.0) as metrics:
        yield Autoscaler(kube, metrics, load_gpu_classes(), interval_seconds=INTERVAL)
    kube.close()


def imd(name: str, gpu_class: str, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tiny"},
            "precision": "fp32",
            "gpuClass": gpu_class,
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": max_replicas,
                "targetQueueDepth": 2,
                "targetP95Seconds": 60,
                "scaleDownStabilizationSeconds": DOWN_WINDOW,
            },
        },
    }


def deployment(name: str, gpu_class: str, owner_uid: str, replicas: int = 1) -> dict[str, Any]:
    """A stand-in for the operator's Deployment: what matters here is replicas, GPU requests, owner."""
    klass = load_gpu_classes()[gpu_class]
    labels = selector_labels(name)
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name, "uid": owner_uid, "controller": True}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": dict(klass.node_selector),
                    "tolerations": [dict(t) for t in klass.tolerations],
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "example.invalid/imagefleet-runtime:test",
                            "resources": {"limits": {str(klass.gpu_resource): "1"}},
                        }
                    ],
                },
            },
        },
    }


class Scene:
    """One resource, its Deployment and its metrics, seen through the API."""

    def __init__(
        self, cluster: Cluster, namespace: str, name: str, gpu_class: str, max_replicas: int, replicas: int = 1
    ) -> None:
        self.namespace, self.name = namespace, name
        self.custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        self.apps: Any = cast(Any, client.AppsV1Api(cluster.api_client))
        self.core: Any = cast(Any, client.CoreV1Api(cluster.api_client))
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, imd(name, gpu_class, max_replicas)
        )
        uid = created["metadata"]["uid"]
        self.apps.create_namespaced_deployment(namespace, deployment(name, gpu_class, uid, replicas))

    def track(self, prometheus: LocalPrometheus, exporters: list[Exporter]) -> None:
        """Scrape one exporter per ready pod, as Prometheus scrapes each runtime pod."""
        self._scraped = (prometheus, exporters)

    def sync_targets(self) -> None:
        if getattr(self, "_scraped", None) is None:
            return
        prometheus, exporters = self._scraped
        status = self.apps.read_namespaced_deployment(self.name, self.namespace).status
        labels = {queries.NAMESPACE_LABEL: self.namespace, queries.NAME_LABEL: self.name}
        ready = max(1, int(status.ready_replicas or 0))
        prometheus.set_targets([Target(pod.address, labels) for pod in exporters[:ready]])

    def resource(self) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return found

    def status(self) -> dict[str, Any]:
        return self.resource().get("status") or {}

    def condition(self, type_: str) -> dict[str, Any]:
        found = c.find(self.status().get("conditions"), type_)
        assert found is not None, f"no {type_} condition in {self.status()}"
        return dict(found)

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment(self.name, self.namespace).spec.replicas)

    def event_reasons(self) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name},involvedObject.kind={KIND}"
        ).items
        return [event.reason for event in sorted(events, key=lambda e: e.metadata.creation_timestamp)]


async def tick(autoscaler: Autoscaler, scene: Scene) -> policy.Decision:
    scene.sync_targets()
    decision = await autoscaler.evaluate(scene.resource())
    assert decision is not None
    await asyncio.sleep(INTERVAL)  # the daemon's evaluation interval
    return decision


async def ticks_until(autoscaler: Autoscaler, scene: Scene, done: Any, timeout: float, what: str) -> policy.Decision:
    deadline = time.monotonic() + timeout
    while True:
        decision = await tick(autoscaler, scene)
        if done(decision):
            return decision
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last decision {decision}"


def prometheus_sees(url: str, namespace: str, name: str, value: float) -> None:
    async def read() -> float | None:
        async with PrometheusClient(url) as metrics:
            return await metrics.value(queries.queue_depth_query(namespace, name))

    wait_until(lambda: asyncio.run(read()) == value, timeout=30, message=f"Prometheus to see a queue of {value:g}")


async def test_burst_scales_up_fast_down_after_window_and_holds_without_prometheus(
    cluster: Cluster, namespace: str, crd: None, prometheus: LocalPrometheus, exporters: list[Exporter],
    autoscaler: Autoscaler,
) -> None:
    scene = Scene(cluster, namespace, "burst", "a100-80gb", max_replicas=6)
    scene.track(prometheus, exporters)
    scene.sync_targets()
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "burst", 0)
    first = await ticks_until(autoscaler, scene, lambda d: d.metrics_available, 30, "metrics")
    assert first.desired == 1
    assert scene.condition(c.METRICS_AVAILABLE)["status"] == c.TRUE

    # Burst: 10 waiting at 2 per replica -> 5 replicas, within two intervals of Prometheus seeing it.
    for pod in exporters[:2]:
        pod.queue_depth.set(5)
    prometheus.set_targets([Target(pod.address, {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: "burst"})
                            for pod in exporters[:2]])
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "burst", 10)
    decisions = [await autoscaler.evaluate(scene.resource())]  # the two loaded pods, before the new ones
    await asyncio.sleep(INTERVAL)
    decisions.append(await tick(autoscaler, scene))
    assert scene.replicas() == 5, decisions
    status = scene.status()
    assert status["desiredReplicas"] == 5
    assert status["queueDepth"] == 10
    assert status["autoscaling"]["queueDepthReplicas"] == 5
    assert status["autoscaling"]["winner"] == policy.QUEUE
    assert [d.reason for d in decisions] == [policy.SCALED_UP, policy.STEADY]
    assert scene.condition(loop.SCALING)["reason"] == policy.STEADY  # the last evaluation changed nothing
    assert "lastScaleTime" in status
    assert policy.SCALED_UP in scene.event_reasons()

    # Load stops, then Prometheus goes down: hold 5 replicas and say why, for well past the window.
    for pod in exporters:
        pod.queue_depth.set(0)
    scene.sync_targets()
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "burst", 0)
    prometheus.stop()
    outage_start = time.monotonic()
    while time.monotonic() - outage_start < DOWN_WINDOW + 5:
        decision = await tick(autoscaler, scene)
        assert decision.desired == 5
        assert scene.replicas() == 5
    available = scene.condition(c.METRICS_AVAILABLE)
    assert (available["status"], available["reason"]) == (c.FALSE, loop.PROMETHEUS_UNREACHABLE)
    assert "holding 5 replicas" in available["message"]
    assert "queueDepth" not in scene.status()

    # Prometheus back: metrics again, and the fleet shrinks only after a full window of low load.
    prometheus.start()
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "burst", 0)
    back = time.monotonic()
    await ticks_until(autoscaler, scene, lambda d: d.metrics_available and not d.missing_series, 30,
                      "every pod's metrics after the restart")
    assert scene.condition(c.METRICS_AVAILABLE)["status"] == c.TRUE
    down = await ticks_until(autoscaler, scene, lambda d: d.desired < 5, DOWN_WINDOW + 30, "the scale-down")
    assert time.monotonic() - back >= DOWN_WINDOW - INTERVAL
    assert down.desired == 1 and down.reason == policy.SCALED_DOWN
    assert scene.replicas() == 1
    reasons = scene.event_reasons()
    assert reasons.index(policy.SCALED_UP) < reasons.index(policy.SCALED_DOWN)


async def test_no_free_gpus_limits_the_scale_up_and_says_so(
    cluster: Cluster, namespace: str, crd: None, prometheus: LocalPrometheus, exporters: list[Exporter],
    autoscaler: Autoscaler,
) -> None:
    # The simulated fleet has two T4 nodes with one GPU each.
    scene = Scene(cluster, namespace, "tight", "t4-16gb", max_replicas=6)
    labels = {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: "tight"}
    prometheus.set_targets([Target(pod.address, labels) for pod in exporters])
    exporters[0].queue_depth.set(12)
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "tight", 12)
    wait_until(
        lambda: scene.apps.read_namespaced_deployment(scene.name, namespace).status.ready_replicas == 1,
        timeout=60,
        message="the first replica to be ready",
    )
    decision = await ticks_until(autoscaler, scene, lambda d: d.limited is not None, 30, "a limited decision")
    assert decision.proposals[policy.QUEUE] == 6
    assert decision.limited == policy.INSUFFICIENT_GPUS
    assert decision.desired == 2  # its own pod and the one free T4
    limited = scene.condition(loop.SCALING_LIMITED)
    assert (limited["status"], limited["reason"]) == (c.TRUE, policy.INSUFFICIENT_GPUS)
    assert "no free GPUs" in limited["message"]
    assert scene.replicas() == decision.desired


async def test_a_pod_whose_series_vanish_blocks_the_scale_down_and_is_reported(
    cluster: Cluster, namespace: str, crd: None, prometheus: LocalPrometheus, exporters: list[Exporter],
    autoscaler: Autoscaler,
) -> None:
    """Two ready pods, both idle; one pod's target leaves Prometheus. The queue sum (0) would
    ask for 1, but one of two ready pods reports nothing: hold 2 past the window, and say so."""
    scene = Scene(cluster, namespace, "partial", "a100-80gb", max_replicas=4, replicas=2)
    labels = {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: "partial"}
    prometheus.set_targets([Target(pod.address, labels) for pod in exporters])
    wait_until(
        lambda: scene.apps.read_namespaced_deployment(scene.name, namespace).status.ready_replicas == 2,
        timeout=60, message="two ready replicas",
    )
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "partial", 0)
    first = await ticks_until(autoscaler, scene, lambda d: d.metrics_available, 30, "metrics")
    assert (first.desired, first.missing_series) == (2, 0)
    available = scene.condition(c.METRICS_AVAILABLE)
    assert available["message"] == (
        f"queue depth and latency read from Prometheus (rate window {4 * INTERVAL:.0f}s: 4 x the 1s scrape interval)"
    )

    prometheus.set_targets([Target(exporters[0].address, labels)])
    await ticks_until(autoscaler, scene, lambda d: d.missing_series == 1, 30, "the lost series to show")
    start = time.monotonic()
    while time.monotonic() - start < DOWN_WINDOW + 5:
        decision = await tick(autoscaler, scene)
        assert (decision.desired, decision.reason, decision.missing_series) == (2, policy.PARTIAL_METRICS, 1)
    assert scene.replicas() == 2
    available = scene.condition(c.METRICS_AVAILABLE)
    assert (available["status"], available["reason"]) == (c.FALSE, policy.PARTIAL_METRICS)
    assert available["message"].startswith("1 ready pods have no fresh queue-depth series: no scale-down")


async def test_a_copy_that_lags_behind_its_last_write_does_not_make_it_write_again(
    cluster: Cluster, namespace: str, crd: None, prometheus: LocalPrometheus, exporters: list[Exporter],
    autoscaler: Autoscaler,
) -> None:
    """A watch that has not yet delivered the autoscaler's own status write hands it the copy from
    before that write: the second evaluation must judge "nothing changed" against its write's
    response, not write the same fields again (one write per round per resource at scale)."""
    scene = Scene(cluster, namespace, "lagging", "a100-80gb", max_replicas=4)
    labels = {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: "lagging"}
    prometheus.set_targets([Target(exporters[0].address, labels)])
    wait_until(lambda: scene.apps.read_namespaced_deployment(scene.name, namespace).status.ready_replicas == 1,
               timeout=60, message="a ready replica")
    await asyncio.to_thread(prometheus_sees, prometheus.url, namespace, "lagging", 0)
    stale = scene.resource()  # the copy from before the autoscaler's first write: the only one it gets
    assert "conditions" not in (stale.get("status") or {})

    async def evaluate() -> policy.Decision | None:
        decision = await autoscaler.evaluate(stale)
        await asyncio.sleep(INTERVAL)
        return decision

    deadline = time.monotonic() + 30
    while not ((decision := await evaluate()) and decision.metrics_available):
        assert time.monotonic() < deadline, f"no metrics: {decision}"
    written = scene.resource()
    assert c.find(written["status"]["conditions"], c.METRICS_AVAILABLE) is not None
    version = written["metadata"]["resourceVersion"]
    for _ in range(3):
        decision = await autoscaler.evaluate(stale)
        assert decision is not None and decision.metrics_available and decision.desired == 1
        await asyncio.sleep(INTERVAL)
    assert scene.resource()["metadata"]["resourceVersion"] == version, "the same status was written again"
