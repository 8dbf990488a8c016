"""The ScaledObject docs/keda.md recommends is the standard tier's resource, queried as the autoscaler queries it."""

from __future__ import annotations

from dataclasses import replace

from imagefleet import GROUP, KIND, VERSION, metrics
from imagefleet.autoscaling import policy, queries
from imagefleet.autoscaling.baseline import KEDA_SCALED_OBJECT, HpaAutoscaler
from imagefleet.tiers import PRESETS
from tests.keda.conftest import (
    DOC_NAME,
    DOC_NAMESPACE,
    DOC_RATE_WINDOW,
    documented_scaled_object,
    gateway_selector,
    scaled_object_for,
)


def test_the_documented_scaled_object_has_the_standard_tiers_bounds_window_and_targets() -> None:
    spec = documented_scaled_object()["spec"]
    standard = PRESETS["standard"].autoscaling
    assert spec["scaleTargetRef"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": DOC_NAME}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (standard.min_replicas, standard.max_replicas)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": standard.scale_down_stabilization_seconds}}
    queue, busy, gateway = spec["triggers"]
    selector = queries.selector(DOC_NAMESPACE, DOC_NAME)
    assert queue["metadata"]["query"] == f"sum({metrics.QUEUE_DEPTH}{selector})"
    assert float(queue["metadata"]["threshold"]) == standard.target_queue_depth
    assert busy["metadata"]["query"] == f"sum(rate({metrics.BATCH_DURATION_SECONDS}_sum{selector}{DOC_RATE_WINDOW}))"
    assert float(busy["metadata"]["threshold"]) == policy.Targets(1, 1, 1, 1).target_utilization
    # The gateway's queue for the resource, one replica per targetQueueDepth, as the HPA baseline gets it.
    gateway_query = f"sum({metrics.GATEWAY_QUEUED_REQUESTS}{gateway_selector(DOC_NAMESPACE, DOC_NAME)})"
    assert gateway["metadata"]["query"] == gateway_query
    assert float(gateway["metadata"]["threshold"]) == standard.target_queue_depth
    # KEDA's defaults elsewhere: no metric type, activation, null handling or fallback of our own.
    assert all({"type", "name", "metadata"} >= set(trigger) for trigger in (queue, busy, gateway))
    assert all(set(t["metadata"]) == {"serverAddress", "query", "threshold"} for t in (queue, busy, gateway))
    assert "fallback" not in spec and "pollingInterval" not in spec and "cooldownPeriod" not in spec


def test_filling_in_the_scaled_object_changes_names_address_and_windows_only() -> None:
    filled = scaled_object_for("ns-1", "res", "http://127.0.0.1:9", down_window=20, rate_window="8s")
    documented = documented_scaled_object()
    assert filled["metadata"] == {"name": "res", "namespace": "ns-1"}
    assert filled["spec"]["scaleTargetRef"]["name"] == "res"
    assert [t["metadata"]["query"] for t in filled["spec"]["triggers"]] == [
        f"sum({metrics.QUEUE_DEPTH}{queries.selector('ns-1', 'res')})",
        f"sum(rate({metrics.BATCH_DURATION_SECONDS}_sum{queries.selector('ns-1', 'res')}[8s]))",
        f"sum({metrics.GATEWAY_QUEUED_REQUESTS}{gateway_selector('ns-1', 'res')})",
    ]
    assert {t["metadata"]["serverAddress"] for t in filled["spec"]["triggers"]} == {"http://127.0.0.1:9"}
    assert [t["metadata"]["threshold"] for t in filled["spec"]["triggers"]] == [
        t["metadata"]["threshold"] for t in documented["spec"]["triggers"]
    ]
    assert filled["spec"]["minReplicaCount"] == documented["spec"]["minReplicaCount"]
    assert filled["spec"]["maxReplicaCount"] == documented["spec"]["maxReplicaCount"]


def test_the_hpa_model_of_the_scaled_object_reads_its_three_triggers_as_external_average_values() -> None:
    # The simulator's model of this ScaledObject (benchmarks/sim_vs_live.py's KEDA side), by hand:
    # 4 replicas, 1 ready; queue 6 -> ceil(6/4) = 2; gateway queue 10 -> ceil(10/4) = 3; busy 2.5
    # replicas' worth -> ceil(2.5/0.8) = 4 whatever the readiness (an External metric, not a Pods
    # one); a p95 far above the target asks nothing (no such trigger). Largest: 4, within the HPA's
    # scale-up limit, so the HPA keeps 4. Busy 3.4: 3.4 / (0.8 x 4) = 1.06, within the 0.1
    # tolerance, so 4 again; busy 3.7: 1.16, so ceil(3.7/0.8) = 5.
    targets = policy.Targets(min_replicas=1, max_replicas=8, target_queue_depth=4.0, target_p95_seconds=20.0)
    seen = policy.Observation(time=0.0, replicas=4, ready_replicas=1, queue_depth=6.0, p95_seconds=400.0,
                              busy_replicas=2.5, gateway_queued=10.0)
    hpa = HpaAutoscaler(targets, KEDA_SCALED_OBJECT)
    assert hpa.metric_proposals(seen) == [2, 3, 4]
    assert hpa.desired(seen) == 4
    assert HpaAutoscaler(targets, KEDA_SCALED_OBJECT).desired(replace(seen, busy_replicas=3.4)) == 4
    assert HpaAutoscaler(targets, KEDA_SCALED_OBJECT).desired(replace(seen, busy_replicas=3.7)) == 5
    # No series at all: KEDA reads 0 (ignoreNullValues), so the HPA may go down to the minimum.
    empty = policy.Observation(time=0.0, replicas=3, ready_replicas=3, queue_depth=None, p95_seconds=None)
    assert HpaAutoscaler(targets, KEDA_SCALED_OBJECT).metric_proposals(empty) == [0, 0]
