"""The queueing model behind the capacity proposal, against figures computed by hand."""

from __future__ import annotations

import math

import pytest

from imagefleet.autoscaling.sizing import erlang_c, replicas_for, wait_quantile


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: the chance to wait is the load
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)


def test_wait_quantile() -> None:
    # 3 servers, lambda 2, mu 1: 0.5 * ln((4/9) / 0.05) / (3 - 2) = 1.092 s.
    assert wait_quantile(3, 2.0, 1.0) == pytest.approx(0.5 * math.log((4 / 9) / 0.05))
    assert wait_quantile(2, 2.0, 1.0) == math.inf  # saturated
    assert wait_quantile(10, 1.0, 1.0) == 0.0  # fewer than 5 % wait at all


def test_one_batch_taking_the_whole_target_gives_no_proposal() -> None:
    assert replicas_for(arrival_rate=1.0, batch_seconds=10.0, batch_size=1.0, queue=0, ready=1, starting=0,
                        target_p95_seconds=10.0, startup_seconds=60.0) is None


def test_no_traffic_and_no_backlog_asks_for_none() -> None:
    assert replicas_for(arrival_rate=0.0, batch_seconds=1.5, batch_size=1.0, queue=0, ready=3, starting=0,
                        target_p95_seconds=10.0, startup_seconds=60.0) == 0
