"""Reading Prometheus's answers: per-pod staleness, NaN/Inf, and scrape intervals."""

from __future__ import annotations

import math

import pytest

from imagefleet.autoscaling import queries
from imagefleet.autoscaling.prometheus import PrometheusQueryError, Sample


def pod(name: str, value: float) -> Sample:
    return Sample({"__name__": "imagefleet_queue_depth", "pod": name, "namespace": "a"}, value)


def age(name: str, seconds: float) -> Sample:
    return Sample({"pod": name, "namespace": "a"}, seconds)


def test_each_pod_is_judged_on_its_own_age() -> None:
    """One fresh pod no longer makes a stale one look fresh."""
    reading = queries.queue_reading(
        [pod("p1", 3.0), pod("p2", 7.0)], [age("p1", 2.0), age("p2", 200.0)], max_age_seconds=90.0
    )
    assert reading == queries.QueueReading(total=3.0, fresh=1, stale=1, newest_age_seconds=2.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(math.nan, 1.0), (math.inf, 1.0), (2.0, math.nan), (2.0, math.inf)],
    ids=["nan-value", "inf-value", "nan-age", "inf-age"],
)
def test_nan_or_inf_in_a_value_or_age_is_no_signal(value: float, seconds: float) -> None:
    reading = queries.queue_reading([pod("p1", 1.0), pod("p2", value)], [age("p1", 1.0), age("p2", seconds)], 90.0)
    assert (reading.total, reading.fresh, reading.stale) == (1.0, 1, 1)


def test_a_pod_without_a_known_age_is_stale_and_no_pod_is_no_total() -> None:
    assert queries.queue_reading([pod("p1", 1.0)], [], 90.0) == queries.QueueReading(None, 0, 1, None)
    assert queries.queue_reading([], [], 90.0) == queries.QueueReading(None, 0, 0, None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0)]
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert queries.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "s15", "1m 30s", "15sx"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(PrometheusQueryError, match="not a Prometheus duration"):
        queries.parse_duration(text)


def test_scrape_interval_per_resource_is_the_longest_of_its_targets() -> None:
    targets: list[dict[str, object]] = [
        {"labels": {"namespace": "a", "imagefleet_io_name": "x"}, "scrapeInterval": "15s"},
        {"labels": {"namespace": "a", "imagefleet_io_name": "x"}, "scrapeInterval": "1m"},
        {"labels": {"namespace": "b", "imagefleet_io_name": "x"}, "scrapeInterval": "30s"},
        {"labels": {"job": "node"}, "scrapeInterval": "10s"},
        {"labels": {"namespace": "a", "imagefleet_io_name": "y"}},  # no interval given
    ]
    assert queries.scrape_intervals(targets) == {("a", "x"): 60.0, ("b", "x"): 30.0}
