"""The ScaledObject docs/keda.md recommends is the standard tier's resource, queried as the autoscaler queries it."""

from __future__ import annotations

from imagefleet import GROUP, KIND, VERSION, metrics
from imagefleet.autoscaling import policy, queries
from imagefleet.tiers import PRESETS
from tests.keda.conftest import DOC_NAME, DOC_NAMESPACE, DOC_RATE_WINDOW, documented_scaled_object, scaled_object_for


def test_the_documented_scaled_object_has_the_standard_tiers_bounds_window_and_targets() -> None:
    spec = documented_scaled_object()["spec"]
    standard = PRESETS["standard"].autoscaling
    assert spec["scaleTargetRef"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": DOC_NAME}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (standard.min_replicas, standard.max_replicas)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": standard.scale_down_stabilization_seconds}}
    queue, busy = spec["triggers"]
    selector = queries.selector(DOC_NAMESPACE, DOC_NAME)
    assert queue["metadata"]["query"] == f"sum({metrics.QUEUE_DEPTH}{selector})"
    assert float(queue["metadata"]["threshold"]) == standard.target_queue_depth
    assert busy["metadata"]["query"] == f"sum(rate({metrics.BATCH_DURATION_SECONDS}_sum{selector}{DOC_RATE_WINDOW}))"
    assert float(busy["metadata"]["threshold"]) == policy.Targets(1, 1, 1, 1).target_utilization
    # KEDA's defaults elsewhere: no metric type, activation, null handling or fallback of our own.
    assert {"type", "name", "metadata"} >= set(queue) and {"type", "name", "metadata"} >= set(busy)
    assert set(queue["metadata"]) == set(busy["metadata"]) == {"serverAddress", "query", "threshold"}
    assert "fallback" not in spec and "pollingInterval" not in spec and "cooldownPeriod" not in spec


def test_filling_in_the_scaled_object_changes_names_address_and_windows_only() -> None:
    filled = scaled_object_for("ns-1", "res", "http://127.0.0.1:9", down_window=20, rate_window="8s")
    documented = documented_scaled_object()
    assert filled["metadata"] == {"name": "res", "namespace": "ns-1"}
    assert filled["spec"]["scaleTargetRef"]["name"] == "res"
    assert [t["metadata"]["query"] for t in filled["spec"]["triggers"]] == [
        f"sum({metrics.QUEUE_DEPTH}{queries.selector('ns-1', 'res')})",
        f"sum(rate({metrics.BATCH_DURATION_SECONDS}_sum{queries.selector('ns-1', 'res')}[8s]))",
    ]
    assert {t["metadata"]["serverAddress"] for t in filled["spec"]["triggers"]} == {"http://127.0.0.1:9"}
    assert [t["metadata"]["threshold"] for t in filled["spec"]["triggers"]] == [
        t["metadata"]["threshold"] for t in documented["spec"]["triggers"]
    ]
    assert filled["spec"]["minReplicaCount"] == documented["spec"]["minReplicaCount"]
    assert filled["spec"]["maxReplicaCount"] == documented["spec"]["maxReplicaCount"]
