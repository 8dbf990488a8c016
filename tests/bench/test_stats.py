"""The bench's figures from hand-made request records."""

from __future__ import annotations

import pytest

from imagefleet.bench.stats import RequestRecord, percentile, summarize, throughput_timeline


def ok(started: float, latency: float, images: int = 1) -> RequestRecord:
    return RequestRecord(started_s=started, latency_s=latency, error=None, images=images)


def failed(error: str) -> RequestRecord:
    return RequestRecord(started_s=0.0, latency_s=0.01, error=error, images=0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.50) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 0.99) == 20.0
    assert percentile([3.0], 0.95) == 3.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summary_counts_errors_by_status_and_times_only_successes() -> None:
    records = [ok(0.0, 1.0, images=2), ok(0.5, 3.0, images=2), failed("429"), failed("429"), failed("ConnectError")]
    summary = summarize(records, wall_seconds=4.0)
    assert (summary.requests, summary.succeeded, summary.failed) == (5, 2, 3)
    assert summary.errors == {"429": 2, "ConnectError": 1}
    assert summary.images == 4
    assert summary.images_per_minute == pytest.approx(60.0)
    assert summary.requests_per_second == pytest.approx(1.25)
    assert summary.latency_p50_seconds == 1.0
    assert summary.latency_p95_seconds == 3.0
    assert summary.latency_max_seconds == 3.0
    assert summary.latency_mean_seconds == pytest.approx(2.0)


def test_summary_without_successes_has_no_latency() -> None:
    summary = summarize([failed("503")], wall_seconds=1.0)
    assert summary.latency_p95_seconds is None
    assert summary.images_per_minute == 0.0


def test_throughput_timeline_bins_completions_per_second() -> None:
    records = [ok(0.0, 0.5), ok(0.2, 0.6), ok(1.0, 1.5, images=3), failed("500")]
    assert throughput_timeline(records) == [2.0, 0.0, 3.0]
