"""The HPA baseline against decisions computed by hand from Kubernetes' replica calculator
and its default behavior (autoscaling/v2)."""

from __future__ import annotations

import math

import pytest

from imagefleet.autoscaling.baseline import (
    KEDA_SCALED_OBJECT,
    HpaAutoscaler,
    external_average_value,
    external_value,
    pods_average_value,
)
from imagefleet.autoscaling.policy import Observation, Targets
from imagefleet.autoscaling.simulation import prometheus_rate

TARGETS = Targets(min_replicas=1, max_replicas=20, target_queue_depth=4, target_p95_seconds=10)


def observe(time: float, replicas: int, ready: int, queue: float | None, p95: float | None,
            busy: float | None = None) -> Observation:
    return Observation(time=time, replicas=replicas, ready_replicas=ready, queue_depth=queue,
                       p95_seconds=p95, busy_replicas=busy)


def test_value_metric_scales_the_ready_pods_not_the_starting_ones() -> None:
    # 4 replicas, 2 still starting; p95 twice the target: ceil(2.0 * 2 ready) = 4, not 8.
    assert external_value(20.0, 10.0, current=4, ready=2) == 4
    assert external_value(20.0, 10.0, current=4, ready=0) == 0  # no ready pod: ceil(2.0 * 0)


@pytest.mark.parametrize(("p95", "expected"), [(10.9, 4), (9.1, 4), (11.1, 5), (5.0, 2)])
def test_value_metric_tolerance(p95: float, expected: int) -> None:
    assert external_value(p95, 10.0, current=4, ready=4) == expected


@pytest.mark.parametrize(("total", "current", "expected"), [(20, 2, 5), (8.5, 2, 2), (9.0, 2, 3), (0, 3, 0)])
def test_average_value_metric_divides_the_total(total: float, current: int, expected: int) -> None:
    # 8.5 / (4 * 2) = 1.06: within tolerance; 9 / 8 = 1.125: ceil(9 / 4) = 3.
    assert external_average_value(total, 4.0, current) == expected


def test_pods_metric_without_unready_pods() -> None:
    # Two pods busy 100 % at a 0.8 target: ratio 1.25, ceil(1.25 * 2) = 3.
    assert pods_average_value([1.0, 1.0], unready=0, target=0.8, current=2) == 3


def test_pods_metric_counts_unready_pods_as_idle_on_a_scale_up() -> None:
    # Same two pods, two more starting: (2 / 4) / 0.8 = 0.625 flips the direction: keep 4.
    assert pods_average_value([1.0, 1.0], unready=2, target=0.8, current=4) == 4
    # Busier: (5.6 / 4) / 0.8 = 1.75, ceil(1.75 * 4) = 7.
    assert pods_average_value([2.8, 2.8], unready=2, target=0.8, current=4) == 7


def test_pods_metric_with_no_pod_reporting_is_invalid() -> None:
    assert pods_average_value([], unready=2, target=0.8, current=2) is None


def test_scale_up_is_limited_to_4_pods_or_100_percent_per_15_s_period() -> None:
    hpa = HpaAutoscaler(TARGETS)
    assert hpa.desired(observe(0, 1, 1, queue=200, p95=None)) == 5  # max(1 + 4, 1 * 2)
    # 5 s later the +4 of t=0 is inside the period: the period started at 1.
    assert hpa.desired(observe(5, 5, 1, queue=200, p95=None)) == 5
    # At 15 s it has left the period (HPA counts events strictly after now - 15 s).
    assert hpa.desired(observe(15, 5, 1, queue=200, p95=None)) == 10  # max(5 + 4, 5 * 2)
    assert hpa.desired(observe(30, 10, 5, queue=200, p95=None)) == 20  # 20 is maxReplicas too


def test_history_is_seeded_with_the_current_count() -> None:
    """A new HPA at 8 replicas with no load holds 8 for the scale-down window, then drops."""
    hpa = HpaAutoscaler(TARGETS)
    for time in range(0, 300, 15):
        assert hpa.desired(observe(time, 8, 8, queue=0, p95=1.0)) == 8
    assert hpa.desired(observe(300, 8, 8, queue=0, p95=1.0)) == 1


def test_scale_down_goes_to_the_largest_recommendation_of_the_window() -> None:
    hpa = HpaAutoscaler(TARGETS)
    hpa.desired(observe(0, 10, 10, queue=40, p95=None))  # asks 10
    hpa.desired(observe(15, 10, 10, queue=24, p95=None))  # asks 6
    for time in range(30, 300, 15):
        assert hpa.desired(observe(time, 10, 10, queue=4, p95=None)) == 10  # asks 1
    assert hpa.desired(observe(300, 10, 10, queue=4, p95=None)) == 6
    assert hpa.desired(observe(315, 6, 6, queue=4, p95=None)) == 1


def test_the_scale_down_window_is_the_targets_one() -> None:
    hpa = HpaAutoscaler(Targets(**{**TARGETS.__dict__, "scale_down_stabilization_seconds": 30.0}))
    hpa.desired(observe(0, 6, 6, queue=24, p95=None))
    assert hpa.desired(observe(15, 6, 6, queue=0, p95=None)) == 6
    # HPA keeps recommendations strictly after now - window: at 30 s the 6 of t=0 is out.
    assert hpa.desired(observe(30, 6, 6, queue=0, p95=None)) == 1


def test_an_invalid_metric_blocks_a_scale_down_but_not_a_scale_up() -> None:
    hpa = HpaAutoscaler(TARGETS)
    # No pod ready: the busy Pods metric is invalid; the others ask 0: hold.
    assert hpa.desired(observe(0, 3, 0, queue=0, p95=None, busy=0.0)) == 3
    # A queue that asks for more still scales up.
    assert hpa.desired(observe(15, 3, 0, queue=24, p95=None, busy=0.0)) == 6


@pytest.mark.parametrize("p95", [None, math.nan])
def test_empty_or_nan_reads_as_zero_as_kedas_default(p95: float | None) -> None:
    hpa = HpaAutoscaler(TARGETS)
    proposals = hpa.metric_proposals(observe(0, 4, 4, queue=16, p95=p95))
    assert proposals == [4, 0]


def test_largest_metric_wins_with_all_three() -> None:
    # queue 8 -> 2; p95 30 s over 3 ready -> 9; busy 2.4 over 3 pods at 0.8 -> ratio 1.0: 3.
    hpa = HpaAutoscaler(TARGETS)
    assert hpa.metric_proposals(observe(0, 3, 3, queue=8, p95=30.0, busy=2.4)) == [2, 9, 3]
    assert hpa.desired(observe(0, 3, 3, queue=8, p95=30.0, busy=2.4)) == 7  # limited: 3 + 4


def test_keda_busy_trigger_waits_for_a_new_pods_series_to_fill_the_rate_window() -> None:
    """The ScaledObject's busy replicas, sum(rate(...[60s])), as Prometheus computes it, at 4 replicas:
    3 pods busy all the time (1.0 each), and a 4th that began serving at 100 s, busy since, its
    counter scraped every 15 s from 0 at 105 s. Its rate climbs by a quarter per scrape, so the
    HPA (10 % tolerance over 4 x 0.8) raises only when the 4th pod's window is three-quarters
    full: at 150 s, three scrapes after its first sample, where the increase over the samples'
    span alone would read 4.0 (ratio 1.25, a raise) at 120 s already."""
    hpa = HpaAutoscaler(TARGETS, KEDA_SCALED_OBJECT)
    decisions = {}
    for now in (120.0, 127.5, 135.0):
        samples = [(at, at - 105.0) for at in (105.0, 120.0, 135.0) if at <= now]
        busy = 3.0 + prometheus_rate(samples, now, 60.0)
        decisions[now] = (busy, hpa.desired(observe(now, 4, 4, queue=0, p95=None, busy=busy)))
    # 120 s: 15 s of 60 -> 3.25 (ratio 3.25 / 3.2 = 1.02, held); 127.5 s: the same samples, the
    # window's end extrapolated 7.5 s -> 3.375 (1.05, held); 135 s: 30 s of 60 -> 3.5 (1.09, held).
    assert decisions == {120.0: (pytest.approx(3.25), 4), 127.5: (pytest.approx(3.375), 4),
                         135.0: (pytest.approx(3.5), 4)}
    samples = [(at, at - 105.0) for at in (105.0, 120.0, 135.0, 150.0)]
    busy = 3.0 + prometheus_rate(samples, 150.0, 60.0)  # 45 s of 60 -> 3.75: ratio 1.17, ceil(3.75 / 0.8)
    assert busy == pytest.approx(3.75)
    assert hpa.desired(observe(150.0, 4, 4, queue=0, p95=None, busy=busy)) == 5
