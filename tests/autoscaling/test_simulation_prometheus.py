"""The simulator's rate() against Prometheus's extrapolatedRate (promql/functions.go), computed by hand."""

from __future__ import annotations

import pytest

from imagefleet.autoscaling.simulation import prometheus_rate


def test_a_series_over_the_whole_window_is_extrapolated_to_its_start() -> None:
    # Scrapes every 15 s at 15..60 in the window (0, 60], 1/s: the first sample is 15 s from the
    # window's start, within 1.1 intervals, so the 45 s increase is stretched to 60 s: 45 x 60/45 / 60.
    assert prometheus_rate([(15, 100), (30, 115), (45, 130), (60, 145)], now=60, window=60) == pytest.approx(1.0)


def test_a_counter_is_not_extrapolated_back_past_its_zero() -> None:
    # Same samples from 0: the counter reads 0 at 15 s, so nothing before: 45 / 60.
    assert prometheus_rate([(15, 0), (30, 15), (45, 30), (60, 45)], now=60, window=60) == pytest.approx(0.75)


def test_a_series_that_starts_inside_the_window_counts_only_what_it_covers() -> None:
    # A pod that began serving at 45 s, busy all the time since: 15 s over the 60 s window, a
    # quarter of its busy share, where the increase over the samples' span says 1.0.
    assert prometheus_rate([(45, 0), (60, 15)], now=60, window=60) == pytest.approx(0.25)
    # A scrape later: 30 s of 60.
    assert prometheus_rate([(45, 0), (60, 15), (75, 30)], now=75, window=60) == pytest.approx(0.5)


def test_a_series_that_ends_inside_the_window_is_extrapolated_half_an_interval() -> None:
    # Samples at 10 s and 20 s (10 s apart), the window (0, 60]: 10 s back to the start (within
    # 1.1 intervals, and the counter's zero is 100 s back), 40 s to the end (past 1.1 intervals,
    # so half an interval, 5 s): 10 x (10 + 10 + 5) / 10 / 60.
    assert prometheus_rate([(10, 100), (20, 110)], now=60, window=60) == pytest.approx(25 / 60)
