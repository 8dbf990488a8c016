"""The operator's /metrics: each resource's status as series (pure rendering, then over HTTP)."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

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
