"""The operator's /metrics: each resource's status as series (pure rendering, then over HTTP)."""

from __future__ import annotations

import urllib.request
from typing import Any

from kubernetes import client
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.dev.processes import HOST
from imagefleet.resource_metrics import (
    CONDITION,
    DESIRED_REPLICAS,
    INFO,
    READY_REPLICAS,
    TARGET_P95_SECONDS,
    ResourceCollector,
    Sample,
    samples,
)
from tests.conftest import Cluster
from tests.helpers import wait_until

from .conftest import OperatorFactory
from .harness import Imds, free_port


def _resource(name: str = "renders", *, autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": name},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "premium",
                 "autoscaling": autoscaling or {"enabled": False}},
        "status": {
            "desiredReplicas": 3,
            "readyReplicas": 2,
            "conditions": [
                {"type": "MetricsAvailable", "status": "False", "reason": "PrometheusUnreachable",
                 "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        },
    }


def test_status_becomes_series_keyed_like_the_runtime_series() -> None:
    found = samples(_resource(autoscaling={"enabled": True, "targetP95Seconds": 4.5}))
    key = ("team-a", "renders")
    assert Sample(INFO, (*key, "premium", "cpu", "tiny"), 1.0) in found
    assert Sample(CONDITION, (*key, "MetricsAvailable", "False", "PrometheusUnreachable"), 1.0) in found
    assert Sample(DESIRED_REPLICAS, key, 3.0) in found
    assert Sample(READY_REPLICAS, key, 2.0) in found
    assert Sample(TARGET_P95_SECONDS, key, 4.5) in found


def test_target_comes_from_the_tier_and_only_when_autoscaling() -> None:
    tier_target = [s for s in samples(_resource(autoscaling={"enabled": True})) if s.metric == TARGET_P95_SECONDS]
    assert len(tier_target) == 1 and tier_target[0].value > 0
    assert not [s for s in samples(_resource()) if s.metric == TARGET_P95_SECONDS]


def test_served_over_http_and_a_deleted_resource_leaves_no_series() -> None:
    collector = ResourceCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(_resource("kept"))
    collector.update(_resource("gone"))
    collector.remove("team-a", "gone")
    server, thread = start_http_server(0, addr=HOST, registry=registry)
    try:
        with urllib.request.urlopen(f"http://{HOST}:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert text == generate_latest(registry).decode()
    assert f'{DESIRED_REPLICAS}{{imagefleet_io_name="kept",namespace="team-a"}} 3.0' in text
    assert 'imagefleet_io_name="gone"' not in text


def test_the_running_operator_exports_its_resources(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory
) -> None:
    port = free_port()
    operator_factory(namespace, env={"IMAGEFLEET_METRICS_PORT": str(port)})
    imds = Imds(cluster.api_client, namespace)
    imds.create("portraits", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 2})
    imds.wait_ready("portraits")

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    key = {("namespace", namespace), ("imagefleet_io_name", "portraits")}
    wait_until(lambda: scrape().get((READY_REPLICAS, frozenset(key))) == 2.0, timeout=30,
               message="ready replicas exported")
    series = scrape()
    assert series[(DESIRED_REPLICAS, frozenset(key))] == 2.0
    assert series[(INFO, frozenset(key | {("gpu_class", "l4-24gb"), ("model", "sd15"), ("tier", "standard")}))] == 1.0
    fits = [labels for name, labels in series if name == CONDITION and ("type", "FitsGPU") in labels]
    assert len(fits) == 1 and ("status", "True") in fits[0]
    client.CustomObjectsApi(cluster.api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "portraits")
    wait_until(lambda: not [labels for _, labels in scrape() if ("imagefleet_io_name", "portraits") in labels],
               timeout=30, message="the deleted resource's series gone")
