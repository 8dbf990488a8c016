"""The autoscaler's status patch: what it reports, and no write when nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from imagefleet import conditions as c
from imagefleet.autoscaling import loop, policy
from imagefleet.autoscaling.loop import Metrics, status_patch
from imagefleet.autoscaling.policy import History, Observation, Targets, decide
from imagefleet.autoscaling.queries import Readings
from imagefleet.tiers import Autoscaling

TARGETS = Targets(min_replicas=1, max_replicas=4, target_queue_depth=2, target_p95_seconds=10)


def merged(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch applied as the API server does (null removes)."""
    result = dict(status)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        elif isinstance(value, dict):
            result[key] = merged({}, value)
        else:
            result[key] = value
    return result


def decision_for(readings: Readings, capacity: int | None = None) -> policy.Decision:
    observation = Observation(
        time=0.0, replicas=2, ready_replicas=2, queue_depth=readings.queue_depth, p95_seconds=readings.p95_seconds,
        busy_replicas=readings.busy_replicas, capacity=capacity,
    )
    return decide(observation, TARGETS, History())


def test_reports_signals_proposals_and_winner_then_stays_quiet() -> None:
    readings = Readings(queue_depth=6.0, p95_seconds=4.25, busy_replicas=1.5, age_seconds=1.0)
    decision = decision_for(readings)
    patch = status_patch({}, decision, Metrics(readings), generation=3, changed=True)
    assert patch is not None
    assert patch["desiredReplicas"] == 3
    assert (patch["queueDepth"], patch["p95Seconds"]) == (6.0, 4.25)
    assert patch["autoscaling"] == {
        "queueDepthReplicas": 3,
        "p95Replicas": 1,
        "utilizationReplicas": 2,
        "capacityReplicas": None,
        "busyReplicas": 1.5,
        "winner": "queueDepth",
    }
    status = merged({}, patch)
    assert c.find(status["conditions"], c.METRICS_AVAILABLE)["status"] == c.TRUE  # type: ignore[index]
    assert c.find(status["conditions"], loop.SCALING)["reason"] == policy.SCALED_UP  # type: ignore[index]
    assert c.find(status["conditions"], loop.SCALING_LIMITED)["status"] == c.FALSE  # type: ignore[index]
    again = status_patch(status, decision, Metrics(readings), generation=3, changed=False)
    assert again is not None and set(again) == {"conditions"}  # Scaling turns False, nothing else
    assert status_patch(merged(status, again), decision, Metrics(readings), generation=3, changed=False) is None


def test_prometheus_down_is_metrics_unavailable_with_the_reason_and_no_stale_numbers() -> None:
    readings = Readings(6.0, 4.0, 1.0, 1.0)
    before = merged({}, status_patch({}, decision_for(readings), Metrics(readings), generation=1, changed=True) or {})
    failure = (loop.PROMETHEUS_UNREACHABLE, "Prometheus at http://127.0.0.1:9 is unreachable: ConnectError")
    empty = Readings(None, None, None, None)
    decision = decide(
        Observation(time=0.0, replicas=3, ready_replicas=3, queue_depth=None, p95_seconds=None, error=failure[1]),
        TARGETS, History(),
    )
    patch = status_patch(before, decision, Metrics(empty, failure), generation=1, changed=False)
    assert patch is not None
    status = merged(before, patch)
    available = c.find(status["conditions"], c.METRICS_AVAILABLE)
    assert available is not None
    assert (available["status"], available["reason"]) == (c.FALSE, loop.PROMETHEUS_UNREACHABLE)
    assert "holding 3 replicas" in available["message"] and "unreachable" in available["message"]
    assert status["desiredReplicas"] == 3
    assert "queueDepth" not in status and "p95Seconds" not in status


def test_insufficient_gpus_is_scaling_limited() -> None:
    readings = Readings(queue_depth=8.0, p95_seconds=None, busy_replicas=None, age_seconds=1.0)
    decision = decision_for(readings, capacity=2)
    status = merged({}, status_patch({}, decision, Metrics(readings), generation=1, changed=False) or {})
    limited = c.find(status["conditions"], loop.SCALING_LIMITED)
    assert limited is not None
    assert (limited["status"], limited["reason"]) == (c.TRUE, policy.INSUFFICIENT_GPUS)


def conditions_of(decision: policy.Decision, readings: Readings, metrics: Metrics | None = None) -> dict[str, Any]:
    patch = status_patch({}, decision, metrics or Metrics(readings), generation=1, changed=False) or {}
    return {condition["type"]: condition for condition in merged({}, patch)["conditions"]}


def test_unreachable_latency_target_is_a_condition_with_both_figures() -> None:
    readings = Readings(0.0, 1.5, 0.45, 1.0, batch_seconds=1.5, batch_size=1.0)
    targets = Targets(min_replicas=1, max_replicas=4, target_queue_depth=2, target_p95_seconds=1)
    decision = decide(
        Observation(time=0.0, replicas=1, ready_replicas=1, queue_depth=0.0, p95_seconds=1.5, busy_replicas=0.45,
                    batch_seconds=1.5, batch_size=1.0),
        targets, History(),
    )
    reachable = conditions_of(decision, readings)[loop.LATENCY_TARGET_REACHABLE]
    assert (reachable["status"], reachable["reason"]) == (c.FALSE, loop.BELOW_SERVICE_TIME)
    assert "targetP95Seconds 1s" in reachable["message"] and "(1.50s)" in reachable["message"]
    # A target above the service time: True, with the figure.
    decision = decide(
        Observation(time=0.0, replicas=1, ready_replicas=1, queue_depth=0.0, p95_seconds=1.5, busy_replicas=0.45,
                    batch_seconds=1.5, batch_size=1.0),
        TARGETS, History(),
    )
    reachable = conditions_of(decision, readings)[loop.LATENCY_TARGET_REACHABLE]
    assert (reachable["status"], reachable["reason"]) == (c.TRUE, loop.ABOVE_SERVICE_TIME)


def test_partial_metrics_is_metrics_available_false_with_the_count() -> None:
    readings = Readings(0.0, None, None, 1.0, queue_series=1)
    decision = decide(
        Observation(time=0.0, replicas=3, ready_replicas=3, queue_depth=0.0, p95_seconds=None, queue_series=1),
        TARGETS, History(),
    )
    available = conditions_of(decision, readings, Metrics(readings, window="rate window 60s: 4 x the 15s scrape interval"))[
        c.METRICS_AVAILABLE
    ]
    assert (available["status"], available["reason"]) == (c.FALSE, policy.PARTIAL_METRICS)
    assert available["message"] == (
        "2 ready pods have no fresh queue-depth series: no scale-down (rate window 60s: 4 x the 15s scrape interval)"
    )


def test_at_zero_the_conditions_say_why() -> None:
    zero = Targets(min_replicas=0, max_replicas=4, target_queue_depth=2, target_p95_seconds=10, scale_to_zero=True)
    empty = Readings(None, None, None, None)
    decision = decide(Observation(time=0.0, replicas=0, ready_replicas=0, queue_depth=None, p95_seconds=None),
                      zero, History())
    found = conditions_of(decision, empty)
    assert (found[loop.SCALING]["status"], found[loop.SCALING]["reason"]) == (c.FALSE, policy.SCALED_TO_ZERO)
    assert found[c.METRICS_AVAILABLE]["reason"] == policy.SCALED_TO_ZERO
    assert found[c.METRICS_AVAILABLE]["message"].startswith("no pods, so no series: 0 replicas: idle")


def test_rate_window_spans_four_scrape_intervals() -> None:
    """A 60 s annotation scrape: a window of 4 evaluation intervals (60 s) would hold one
    sample and read as no traffic; it spans 4 scrapes instead."""
    settings = Autoscaling(True, 1, 4, 2, 10, 0, 300)
    assert loop.targets_of(settings, 15.0, scrape_interval_seconds=60.0).latency_window_seconds == 240.0
    assert loop.targets_of(settings, 15.0, scrape_interval_seconds=5.0).latency_window_seconds == 60.0
    assert loop.targets_of(settings, 15.0).latency_window_seconds == 60.0


def test_min_replicas_zero_counts_only_with_a_demand_source() -> None:
    settings = Autoscaling(True, 0, 4, 2, 10, 0, 300)
    assert loop.targets_of(settings, 15.0).min_replicas == 1  # stored before the API server refused it
    zero = loop.targets_of(settings, 15.0, demand_source="Gateway")
    assert (zero.min_replicas, zero.scale_to_zero) == (0, True)


def test_demand_age_from_the_gateway_annotation() -> None:
    now = datetime(2026, 11, 29, 7, 0, 10, 500000, tzinfo=UTC)
    annotations = {loop.DEMAND_ANNOTATION: "2026-11-29T07:00:00.250000Z"}
    assert loop.demand_age_seconds(annotations, now) == 10.25
    assert loop.demand_age_seconds({}, now) is None
    assert loop.demand_age_seconds({loop.DEMAND_ANNOTATION: "yesterday"}, now) is None


def test_no_first_write_until_the_first_readings_can_be_there_unless_it_scales_or_reading_failed() -> None:
    empty = Readings(None, None, None, None)
    window = 60.0

    def holding(ready: int) -> policy.Decision:
        observation = Observation(time=0.0, replicas=1, ready_replicas=ready, queue_depth=None, p95_seconds=None,
                                  busy_replicas=None)
        return decide(observation, TARGETS, History())

    def quiet(resource: dict[str, Any], decision: policy.Decision, metrics: Metrics, *, replicas: int = 1,
              ready: int = 0, ready_for: float = 0.0) -> bool:
        return loop.nothing_to_report_yet(resource, decision, metrics, replicas=replicas, ready=ready,
                                          ready_for_seconds=ready_for, grace_seconds=window)

    rolling_out = holding(ready=0)
    assert rolling_out.desired == 1 and not rolling_out.metrics_available
    assert quiet({}, rolling_out, Metrics(empty))
    # A pod is ready: Prometheus has a rate window to find and scrape it ("no series", "window too short")...
    too_short = Metrics(empty, (loop.RATE_WINDOW_TOO_SHORT, "the 60s rate window holds 1 sample"))
    assert quiet({}, holding(ready=1), Metrics(empty), ready=1, ready_for=59.0)
    assert quiet({}, holding(ready=1), too_short, ready=1, ready_for=59.0)
    # ... and after it, a scrape that never finds the pods is news.
    assert not quiet({}, holding(ready=1), Metrics(empty), ready=1, ready_for=60.0)
    assert not quiet({}, holding(ready=1), too_short, ready=1, ready_for=60.0)
    # Readings there: written at once.
    found = decision_for(Readings(queue_depth=0.0, p95_seconds=None, busy_replicas=0.0, age_seconds=1.0))
    assert found.metrics_available
    assert not quiet({}, found, Metrics(Readings(0.0, None, 0.0, 1.0)), ready=1, ready_for=1.0)
    # Prometheus missing or unreachable is said at once.
    failed = Metrics(empty, (loop.PROMETHEUS_NOT_CONFIGURED, "IMAGEFLEET_PROMETHEUS_URL is not set"))
    assert not quiet({}, rolling_out, failed)
    assert not quiet({}, holding(ready=1), Metrics(empty, (loop.PROMETHEUS_UNREACHABLE, "refused")), ready=1)
    # After the autoscaler's first write, every change is written as before.
    reported = merged({}, status_patch({}, rolling_out, Metrics(empty), generation=1, changed=False) or {})
    assert not quiet({"status": reported}, rolling_out, Metrics(empty))
    # A scale (a capacity cap, a floor) is written whatever the pods.
    floor = decide(Observation(time=0.0, replicas=0, ready_replicas=0, queue_depth=None, p95_seconds=None,
                               busy_replicas=None), TARGETS, History())
    assert floor.desired == 1
    assert not quiet({}, floor, Metrics(empty), replicas=0)


def test_the_apply_carries_all_of_the_autoscalers_fields_and_none_of_the_operators() -> None:
    readings = Readings(queue_depth=6.0, p95_seconds=4.25, busy_replicas=1.5, age_seconds=1.0)
    decision = decision_for(readings)
    operator = {"type": c.READY, "status": c.TRUE, "reason": "AllReplicasReady", "message": "2/2 replicas ready",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
    status = {"replicas": 2, "readyReplicas": 2, "lastScaleTime": "2026-01-01T00:00:00Z", "conditions": [operator]}
    patch = status_patch(status, decision, Metrics(readings), generation=3, changed=False)
    assert patch is not None
    owned = loop.owned_status(loop.merge_patched(status, patch))
    assert "replicas" not in owned and "readyReplicas" not in owned
    assert c.find(owned["conditions"], c.READY) is None
    assert {condition["type"] for condition in owned["conditions"]} >= {c.METRICS_AVAILABLE, loop.SCALING}
    # A field it set before and does not change now is in the apply (left out, the apply would remove it).
    assert owned["lastScaleTime"] == "2026-01-01T00:00:00Z"
    assert owned["desiredReplicas"] == 3 and owned["queueDepth"] == 6.0
    # A signal gone (null in the merge patch) is left out, so the apply removes it.
    gone = status_patch(loop.merge_patched(status, patch), decision_for(Readings(None, None, None, None)),
                        Metrics(Readings(None, None, None, None)), generation=3, changed=False)
    assert gone is not None
    assert "queueDepth" not in loop.owned_status(loop.merge_patched(loop.merge_patched(status, patch), gone))


def test_no_signal_at_all_stores_no_autoscaling_object_and_is_not_rewritten() -> None:
    empty = Readings(None, None, None, None)
    decision = decision_for(empty)
    patch = status_patch({}, decision, Metrics(empty), generation=1, changed=False)
    assert patch is not None
    owned = loop.owned_status(loop.merge_patched({}, patch))
    assert "autoscaling" not in owned  # an empty object the API server would refuse in an apply
    assert status_patch(owned, decision, Metrics(empty), generation=1, changed=False) is None


def test_a_gateway_demand_source_without_gateway_series_says_it_sizes_from_the_pods_alone() -> None:
    readings = Readings(queue_depth=2.0, p95_seconds=4.0, busy_replicas=1.0, age_seconds=1.0)
    decision = decision_for(readings)
    patch = status_patch({}, decision, Metrics(readings), generation=1, changed=False, demand_source="Gateway")
    available = c.find(merged({}, patch or {})["conditions"], c.METRICS_AVAILABLE)
    assert available is not None
    assert (available["status"], available["reason"]) == (c.TRUE, loop.NO_GATEWAY_DEMAND)
    assert "sized from the pods' queue depth and latency alone" in available["message"]
    # Without a demand source, the pods' signals are the whole story: nothing to say.
    plain = status_patch({}, decision, Metrics(readings), generation=1, changed=False)
    assert c.find(merged({}, plain or {})["conditions"], c.METRICS_AVAILABLE)["reason"] == loop.METRICS_FOUND
    # With the gateway's series, MetricsFound says they were read.
    fed = decide(Observation(time=0.0, replicas=2, ready_replicas=2, queue_depth=2.0, p95_seconds=4.0,
                             gateway_arrival_rate=1.0, gateway_queued=3.0), TARGETS, History())
    both = status_patch({}, fed, Metrics(readings), generation=1, changed=False, demand_source="Gateway")
    found = c.find(merged({}, both or {})["conditions"], c.METRICS_AVAILABLE)
    assert found["reason"] == loop.METRICS_FOUND and "the gateway's demand" in found["message"]
