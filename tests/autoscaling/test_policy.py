"""One test per rule of the autoscaling policy (imagefleet.autoscaling.policy)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from imagefleet.autoscaling.policy import (
    CAPACITY,
    IDLE_WINDOW_ELAPSED,
    INSUFFICIENT_GPUS,
    LATENCY,
    METRICS_MISSING,
    METRICS_STALE,
    PARTIAL_METRICS,
    QUEUE,
    SCALED_DOWN,
    SCALED_FROM_ZERO,
    SCALED_TO_ZERO,
    SCALED_UP,
    STABILIZING,
    STEADY,
    TOO_FEW,
    TOO_MANY,
    UTILIZATION,
    Decision,
    History,
    Observation,
    Targets,
    decide,
)

TARGETS = Targets(
    min_replicas=1,
    max_replicas=10,
    target_queue_depth=2.0,
    target_p95_seconds=10.0,
    scale_down_stabilization_seconds=300.0,
    latency_window_seconds=60.0,
)


def observe(
    time: float,
    replicas: int,
    queue: float | None,
    p95: float | None,
    *,
    ready: int | None = None,
    **extra: Any,
) -> Observation:
    return Observation(
        time=time,
        replicas=replicas,
        ready_replicas=replicas if ready is None else ready,
        queue_depth=queue,
        p95_seconds=p95,
        **extra,
    )


class Fleet:
    """Feeds observations to the policy every 15 s and applies its decisions."""

    def __init__(self, replicas: int, targets: Targets = TARGETS) -> None:
        self.replicas = replicas
        self.targets = targets
        self.history = History()
        self.time = 0.0
        self.decisions: list[Decision] = []

    def step(self, queue: float | None, p95: float | None, **extra: Any) -> Decision:
        decision = decide(observe(self.time, self.replicas, queue, p95, **extra), self.targets, self.history)
        self.history = decision.history
        self.replicas = decision.desired
        self.decisions.append(decision)
        self.time += 15.0
        return decision


def test_queue_signal_asks_for_queue_over_target() -> None:
    decision = decide(observe(0, 2, queue=12, p95=None), TARGETS, History())
    assert decision.proposals == {QUEUE: 6, LATENCY: None, UTILIZATION: None, CAPACITY: None}
    assert decision.winner == QUEUE
    assert (decision.desired, decision.reason) == (6, SCALED_UP)


def test_latency_signal_scales_proportionally() -> None:
    decision = decide(observe(0, 2, queue=4, p95=25.0), TARGETS, History())
    # queue 4 / 2 per replica = 2 replicas: within tolerance; p95 2.5x target.
    assert decision.proposals == {QUEUE: 2, LATENCY: 5, UTILIZATION: None, CAPACITY: None}
    assert (decision.desired, decision.winner) == (5, LATENCY)


def test_larger_proposal_wins() -> None:
    decision = decide(observe(0, 2, queue=16, p95=15.0), TARGETS, History())
    assert decision.proposals == {QUEUE: 8, LATENCY: 3, UTILIZATION: None, CAPACITY: None}
    assert (decision.desired, decision.winner) == (8, QUEUE)


def test_utilization_asks_for_busy_replicas_over_target() -> None:
    decision = decide(observe(0, 2, queue=0, p95=3.0, busy_replicas=4.0), TARGETS, History())
    # 4 replicas busy on average at a 0.8 target: 5.
    assert decision.proposals == {QUEUE: 0, LATENCY: 1, UTILIZATION: 5, CAPACITY: None}
    assert (decision.desired, decision.winner) == (5, UTILIZATION)


def test_busy_fleet_does_not_shrink_on_low_latency_alone() -> None:
    """Unsaturated, the queue is empty and p95 is the bare service time: both ask for
    a fraction of the fleet. Busy replicas keep it where the work needs it."""
    fleet = Fleet(8)
    for _ in range(40):
        decision = fleet.step(queue=0, p95=3.0, busy_replicas=6.0)
    assert decision.desired == 8
    assert decision.winner == UTILIZATION


@pytest.mark.parametrize(("queue", "p95", "busy"), [(8.7, 10.9, 3.2), (7.3, 9.1, 2.9)])
def test_within_tolerance_band_holds(queue: float, p95: float, busy: float) -> None:
    decision = decide(observe(0, 4, queue=queue, p95=p95, busy_replicas=busy), TARGETS, History())
    assert decision.proposals == {QUEUE: 4, LATENCY: 4, UTILIZATION: 4, CAPACITY: None}
    assert (decision.desired, decision.reason) == (4, STEADY)


def test_just_outside_tolerance_band_acts() -> None:
    decision = decide(observe(0, 4, queue=9.2, p95=None), TARGETS, History())
    assert decision.desired == 5


def test_scale_up_is_immediate() -> None:
    fleet = Fleet(1)
    fleet.step(queue=0, p95=None)
    decision = fleet.step(queue=20, p95=30.0)
    assert (decision.desired, decision.reason) == (10, SCALED_UP)


def test_scale_up_window_takes_smallest_recommendation() -> None:
    fleet = Fleet(1, Targets(**{**TARGETS.__dict__, "scale_up_stabilization_seconds": 30.0}))
    fleet.step(queue=2, p95=None)  # t=0: asks 1
    assert fleet.step(queue=20, p95=None).desired == 1  # t=15: asks 10, but 1 is in the window
    assert fleet.step(queue=20, p95=None).desired == 10  # t=30: the 1 at t=0 has left it


def test_scale_down_waits_for_the_stabilization_window() -> None:
    fleet = Fleet(1)
    fleet.step(queue=20, p95=30.0)  # t=0 -> 10 replicas
    assert fleet.replicas == 10
    held = [fleet.step(queue=0, p95=None) for _ in range(19)]  # t=15..285
    assert {d.desired for d in held} == {10}
    assert {d.reason for d in held} == {STABILIZING}
    decision = fleet.step(queue=0, p95=None)  # t=300: the 10 of t=0 has left the window
    assert (decision.desired, decision.reason) == (1, SCALED_DOWN)


def test_scale_down_goes_to_the_largest_recommendation_in_window() -> None:
    fleet = Fleet(10)
    fleet.step(queue=20, p95=None)  # t=0 asks 10
    fleet.step(queue=12, p95=None)  # t=15 asks 6
    for _ in range(18):
        fleet.step(queue=2, p95=None)  # t=30..285 asks 1
    assert fleet.replicas == 10
    assert fleet.step(queue=2, p95=None).desired == 6  # t=300: 6 (t=15) is the largest left
    assert fleet.step(queue=2, p95=None).desired == 1  # t=315


@pytest.mark.parametrize(
    ("replicas", "queue", "desired", "limited"),
    [(5, 100, 10, TOO_MANY), (1, 0, 1, TOO_FEW), (4, 8, 4, None)],
)
def test_clamped_to_min_and_max(replicas: int, queue: float, desired: int, limited: str | None) -> None:
    decision = decide(observe(0, replicas, queue=queue, p95=None), TARGETS, History())
    assert (decision.desired, decision.limited) == (desired, limited)


def test_no_free_gpus_limits_scale_up_and_says_so() -> None:
    decision = decide(observe(0, 2, queue=16, p95=None, capacity=3), TARGETS, History())
    assert (decision.desired, decision.limited) == (3, INSUFFICIENT_GPUS)
    assert "no free GPUs" in decision.message
    # Never scales down because GPUs are short: pods already there stay.
    decision = decide(observe(0, 4, queue=16, p95=None, capacity=2), TARGETS, History())
    assert (decision.desired, decision.limited) == (4, INSUFFICIENT_GPUS)


@pytest.mark.parametrize(
    ("queue", "p95", "extra", "reason"),
    [
        (None, None, {}, METRICS_MISSING),
        (math.nan, math.nan, {}, METRICS_MISSING),
        (None, None, {"error": "Prometheus unreachable: connection refused"}, METRICS_MISSING),
        (0.0, 1.0, {"metrics_age_seconds": 600.0}, METRICS_STALE),
    ],
)
def test_holds_on_missing_nan_or_stale_data(
    queue: float | None, p95: float | None, extra: dict[str, object], reason: str
) -> None:
    fleet = Fleet(6)
    for _ in range(40):  # far past every window
        decision = fleet.step(queue=queue, p95=p95, **extra)
        assert (decision.desired, decision.reason, decision.metrics_available) == (6, reason, False)
    assert "holding 6 replicas" in decision.message
    if "error" in extra:
        assert "connection refused" in decision.message


def test_missing_data_does_not_count_as_zero_after_an_outage() -> None:
    fleet = Fleet(6)
    for _ in range(30):
        fleet.step(queue=None, p95=None)
    # Back with low load: the outage counted as "hold", so the window starts now.
    decision = fleet.step(queue=0, p95=None)
    assert (decision.desired, decision.reason) == (6, STABILIZING)


def test_nan_p95_is_no_traffic_not_zero_latency() -> None:
    decision = decide(observe(0, 4, queue=8, p95=math.nan), TARGETS, History())
    assert decision.proposals == {QUEUE: 4, LATENCY: None, UTILIZATION: None, CAPACITY: None}
    assert (decision.desired, decision.metrics_available) == (4, True)


def test_latency_alone_never_scales_down() -> None:
    fleet = Fleet(6)
    for _ in range(40):
        decision = fleet.step(queue=None, p95=1.0)
        assert decision.desired == 6
    assert fleet.step(queue=None, p95=30.0).desired == 10


def test_lagging_p95_does_not_compound_a_scale_up() -> None:
    fleet = Fleet(2)
    assert fleet.step(queue=4, p95=20.0, ready=2).desired == 4
    # New pods are starting; the 60 s p95 still reflects the two old ones.
    for _ in range(3):
        assert fleet.step(queue=4, p95=20.0, ready=2).desired == 4
    # Four ready for a whole latency window and still slow: scale again.
    for _ in range(4):
        fleet.step(queue=4, p95=20.0, ready=4)
    assert fleet.step(queue=4, p95=20.0, ready=4).desired == 8


def test_fresh_autoscaler_never_scales_down_at_once() -> None:
    decision = decide(observe(1000.0, 8, queue=0, p95=None), TARGETS, History())
    assert (decision.desired, decision.reason) == (8, STABILIZING)


def test_flapping_inputs_do_not_flap_replicas() -> None:
    fleet = Fleet(2)
    for i in range(80):  # 20 minutes alternating every evaluation
        high = i % 2 == 0
        fleet.step(queue=12 if high else 0, p95=10.5 if high else 3.0)
    sizes = [d.desired for d in fleet.decisions]
    assert sizes == [6] * len(sizes)


def test_noisy_plateau_inside_tolerance_does_not_move() -> None:
    fleet = Fleet(5)
    for i in range(60):
        fleet.step(queue=10 + (0.9 if i % 3 else -0.9), p95=10.0 + (0.8 if i % 2 else -0.8))
    assert {d.desired for d in fleet.decisions} == {5}


@pytest.mark.parametrize(("low", "high"), [(-1, 3), (3, 2)])
def test_targets_reject_bad_ranges(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="minReplicas"):
        Targets(min_replicas=low, max_replicas=high, target_queue_depth=1, target_p95_seconds=1)


# The latency ratchet: a target no replica count can reach.


def test_unreachable_p95_target_holds_and_says_why_with_both_figures() -> None:
    """0.3 requests/s, batches of one taking 1.5 s, queue 0, target 1 s: latency cannot be
    fixed by replicas. It used to ask for more every interval, up to maxReplicas."""
    targets = Targets(**{**TARGETS.__dict__, "target_p95_seconds": 1.0})
    fleet = Fleet(1, targets)
    for _ in range(40):
        decision = fleet.step(
            queue=0, p95=1.5, busy_replicas=0.45, served_rate=0.3, batch_seconds=1.5, batch_size=1.0
        )
        assert decision.desired == 1
        assert decision.proposals[LATENCY] is None
    assert (decision.reason, decision.winner) == (STEADY, UTILIZATION)
    assert decision.latency_unreachable is not None
    assert "targetP95Seconds 1s" in decision.latency_unreachable and "(1.50s)" in decision.latency_unreachable


def test_idle_service_time_is_a_lower_bound_from_the_mean_batch() -> None:
    # Batches of 4 taking 4.5 s: one request alone takes at least 4.5 / 4 s.
    targets = Targets(**{**TARGETS.__dict__, "target_p95_seconds": 1.0})
    decision = decide(
        observe(0, 2, queue=0, p95=5.0, batch_seconds=4.5, batch_size=4.0), targets, History()
    )
    assert decision.latency_unreachable is not None and "(1.12s)" in decision.latency_unreachable


# Partial metric loss.


def test_pods_without_a_fresh_series_block_scale_down_and_count_at_target() -> None:
    """Three ready pods, one reports an empty queue: the other two count as holding the
    target (2 each), which asks for 2, but nothing scales down while any are missing."""
    fleet = Fleet(3)
    for _ in range(30):  # far past the scale-down window
        decision = fleet.step(queue=0, p95=None, queue_series=1)
        assert decision.desired == 3
    assert decision.proposals[QUEUE] == 2
    assert (decision.reason, decision.missing_series) == (PARTIAL_METRICS, 2)
    assert "2 of 3 ready pods have no fresh queue depth" in decision.message


def test_missing_series_count_as_idle_on_a_scale_up() -> None:
    # One of three pods reports 16 waiting; on a scale-up the two silent ones count as idle: 16 / 2 = 8.
    decision = decide(observe(0, 3, queue=16, p95=None, queue_series=1), TARGETS, History())
    assert (decision.desired, decision.reason, decision.proposals[QUEUE]) == (8, SCALED_UP, 8)


def test_all_series_present_scales_down_as_usual() -> None:
    fleet = Fleet(3)
    for _ in range(21):
        decision = fleet.step(queue=0, p95=None, queue_series=3)
    assert (decision.desired, decision.reason) == (1, SCALED_DOWN)


@pytest.mark.parametrize(
    "extra",
    [
        {"queue": math.inf},
        {"queue": 0.0, "metrics_age_seconds": math.nan},
        {"queue": 0.0, "metrics_age_seconds": math.inf},
    ],
    ids=["inf-queue", "nan-age", "inf-age"],
)
def test_nan_and_inf_readings_are_no_signal(extra: dict[str, float]) -> None:
    fleet = Fleet(6)
    queue = extra.pop("queue")
    for _ in range(30):
        decision = fleet.step(queue=queue, p95=None, **extra)
        assert (decision.desired, decision.metrics_available) == (6, False)
    assert decision.reason == (METRICS_MISSING if "metrics_age_seconds" not in extra else METRICS_STALE)


def test_inf_busy_and_p95_give_no_proposal() -> None:
    decision = decide(observe(0, 2, queue=4, p95=math.inf, busy_replicas=math.inf), TARGETS, History())
    assert decision.proposals == {QUEUE: 2, LATENCY: None, UTILIZATION: None, CAPACITY: None}


# The free-GPU cap.


def test_free_gpu_cap_never_goes_below_min_replicas() -> None:
    targets = Targets(**{**TARGETS.__dict__, "min_replicas": 3})
    decision = decide(observe(0, 1, queue=20, p95=None, capacity=1), targets, History())
    assert (decision.desired, decision.limited) == (3, INSUFFICIENT_GPUS)


# The queueing model.


def test_capacity_sizes_for_the_p95_target_and_decides_alone() -> None:
    """2 requests/s served in batches of 2 taking 2 s (mu = 1/s per replica), target 10 s:
    3 replicas wait 0.5 * ln(C(3, 2) / 0.05) / (3 - 2) = 1.09 s at the 95th percentile,
    within the 8 s slack (2 would be saturated). The proxies are shown, not used."""
    decision = decide(
        observe(0, 5, queue=0, p95=3.0, busy_replicas=2.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0),
        TARGETS,
        History(),
    )
    assert decision.proposals == {QUEUE: 0, LATENCY: 2, UTILIZATION: 3, CAPACITY: 3}
    assert decision.winner == CAPACITY


@pytest.mark.parametrize(
    ("replicas", "ready", "expected"),
    [
        # 120 waiting, 2 ready keep up with 2/s: over the 60 s start-up the backlog stays 120,
        # to drain within 0.3 * 60 = 18 s: (2 + 120 / 18) / 1 = 8.67 -> 9.
        (2, 2, 9),
        # Two more already starting serve half the start-up: 120 - 0.5 * 2 * 1 * 60 = 60 -> 5.33 -> 6.
        (4, 2, 6),
    ],
)
def test_capacity_adds_what_drains_the_backlog_before_new_pods_serve(replicas: int, ready: int, expected: int) -> None:
    steady_queue = History(queue=(-15.0, 120.0))  # the same 120 a moment ago: no growth
    decision = decide(
        observe(0, replicas, queue=120, p95=20.0, ready=ready, served_rate=2.0, batch_seconds=2.0, batch_size=2.0),
        TARGETS,
        steady_queue,
    )
    assert (decision.proposals[CAPACITY], decision.desired, decision.winner) == (expected, expected, CAPACITY)


def test_a_first_look_takes_the_queue_as_built_within_the_window() -> None:
    # 30 waiting, 24 past the target, and no earlier reading: 24 / 60 s more than the 2/s served.
    decision = decide(
        observe(0, 3, queue=30, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0), TARGETS, History()
    )
    assert "2.40 requests/s" in decision.message


def test_a_growing_queue_counts_as_arrivals_not_yet_served() -> None:
    fleet = Fleet(3)
    fleet.step(queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0)
    # 30 waiting 15 s later, 24 of them past the target (2 per ready replica): 1.6/s more
    # arrive than are served. A queue within the target is batching noise, not arrivals.
    decision = fleet.step(queue=30, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0)
    assert decision.message.count("3.60 requests/s") == 1
    assert "2.00 requests/s" in fleet.step(queue=6, p95=3.0, served_rate=2.0, batch_seconds=2.0,
                                           batch_size=2.0).message


def test_the_gateway_queue_joins_the_backlog_and_its_arrivals_the_rate() -> None:
    """The pods keep up (2/s served, nothing queued at them) while 60 wait at the gateway and 5/s
    arrive there: capacity sizes for the arrivals plus the backlog, not for what was served."""
    pods_only = decide(observe(0, 2, queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0),
                       TARGETS, History())
    assert pods_only.proposals[CAPACITY] == 3 and not pods_only.gateway_demand
    with_gateway = decide(
        observe(0, 2, queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0,
                gateway_arrival_rate=5.0, gateway_queued=60.0),
        TARGETS, History(),
    )
    # Backlog 60 + (5 - 2) * 60 s of start-up = 240, drained within 18 s: (5 + 240 / 18) / 1 = 18.3 -> 19,
    # clamped to maxReplicas 10.
    assert with_gateway.proposals[CAPACITY] == 19 and with_gateway.desired == 10
    assert with_gateway.gateway_demand
    assert "60 of them at the gateway" in with_gateway.message and "5.00 requests/s arriving" in with_gateway.message


def test_demand_over_twice_the_ready_rate_scales_to_it_at_once_whatever_the_scale_up_window() -> None:
    slow = Targets(**{**TARGETS.__dict__, "scale_up_stabilization_seconds": 120.0})
    history = decide(observe(-30, 2, queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0),
                     slow, History()).history
    # 2 ready serve 2/s; 3/s arrive and 10 wait: 3 + 10 / 10 = 4/s, not over twice 2/s: the window holds.
    calm = decide(observe(0, 2, queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0,
                          gateway_arrival_rate=3.0, gateway_queued=10.0), slow, history)
    assert not calm.panic and calm.desired == 2 and calm.proposals[CAPACITY] > 2
    # 6/s arrive and 40 wait: 10/s, over twice 2/s: capacity's count at once.
    burst = decide(observe(0, 2, queue=0, p95=3.0, served_rate=2.0, batch_seconds=2.0, batch_size=2.0,
                           gateway_arrival_rate=6.0, gateway_queued=40.0), slow, history)
    assert burst.panic and burst.desired == min(10, burst.proposals[CAPACITY] or 0) and burst.desired > 2
    assert "sized to it at once" in burst.message


# Scale to and from zero.

ZERO = Targets(**{**TARGETS.__dict__, "min_replicas": 0, "scale_to_zero": True})


def test_min_replicas_zero_needs_a_demand_source() -> None:
    with pytest.raises(ValueError, match="demand source"):
        Targets(min_replicas=0, max_replicas=3, target_queue_depth=1, target_p95_seconds=1)


def test_at_zero_without_demand_it_stays_and_says_so() -> None:
    decision = decide(observe(0, 0, queue=None, p95=None, demand_age_seconds=301.0), ZERO, History())
    assert (decision.desired, decision.reason) == (0, SCALED_TO_ZERO)
    assert "gateway wakes it" in decision.message


@pytest.mark.parametrize("age", [0.2, -3.0, 299.0], ids=["fresh", "clock-ahead", "end-of-window"])
def test_demand_wakes_a_resource_at_zero_at_once(age: float) -> None:
    decision = decide(observe(0, 0, queue=None, p95=None, demand_age_seconds=age), ZERO, History())
    assert (decision.desired, decision.reason) == (1, SCALED_FROM_ZERO)


def test_idle_resource_reaches_zero_only_after_the_window_without_demand() -> None:
    fleet = Fleet(1, ZERO)
    idle = {"busy_replicas": 0.0}
    held = [fleet.step(queue=0, p95=None, **idle) for _ in range(20)]  # t = 0..285
    assert {d.desired for d in held} == {1}
    decision = fleet.step(queue=0, p95=None, **idle)  # t = 300
    assert (decision.desired, decision.reason) == (0, IDLE_WINDOW_ELAPSED)
    assert fleet.step(queue=None, p95=None).reason == SCALED_TO_ZERO


def test_recent_demand_keeps_one_replica() -> None:
    fleet = Fleet(1, ZERO)
    for _ in range(40):
        decision = fleet.step(queue=0, p95=None, busy_replicas=0.0, demand_age_seconds=100.0)
        assert decision.desired == 1
    assert "gateway demand 100s ago keeps 1 replica" in decision.message


def test_without_a_demand_source_it_never_reaches_zero() -> None:
    fleet = Fleet(1)
    for _ in range(40):
        assert fleet.step(queue=0, p95=None, busy_replicas=0.0).desired == 1
