"""Figures from a load run: latency percentiles, throughput, errors by status."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it."""

    started_s: float  # since the run began
    latency_s: float  # send to last byte of the response
    error: str | None  # HTTP status code or transport error name; None on success
    images: int  # images in a successful response

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Summary:
    """What `imagefleet bench` reports (also its `--json` document)."""

    requests: int
    succeeded: int
    failed: int
    errors: dict[str, int]  # status code or transport error -> count
    wall_seconds: float
    images: int
    images_per_minute: float
    requests_per_second: float
    # Over successful requests; None when none succeeded.
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None
    latency_p99_seconds: float | None
    latency_mean_seconds: float | None
    latency_max_seconds: float | None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the first value whose rank reaches `q * n`.

    This is the observation whose bucket Prometheus' `histogram_quantile`
    picks, so a client p95 and a server histogram p95 are comparable.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = q * len(sorted_values)
    for index, value in enumerate(sorted_values, start=1):
        if index >= rank:
            return value
    return sorted_values[-1]


def summarize(records: Sequence[RequestRecord], wall_seconds: float) -> Summary:
    """Reduce per-request records to the bench report."""
    latencies = sorted(r.latency_s for r in records if r.ok)
    images = sum(r.images for r in records if r.ok)
    errors = Counter(r.error for r in records if r.error is not None)

    def quantile(q: float) -> float | None:
        return percentile(latencies, q) if latencies else None

    per_second = 1.0 / wall_seconds if wall_seconds > 0 else 0.0
    return Summary(
        requests=len(records),
        succeeded=len(latencies),
        failed=len(records) - len(latencies),
        errors=dict(sorted(errors.items())),
        wall_seconds=wall_seconds,
        images=images,
        images_per_minute=images * 60.0 * per_second,
        requests_per_second=len(records) * per_second,
        latency_p50_seconds=quantile(0.50),
        latency_p95_seconds=quantile(0.95),
        latency_p99_seconds=quantile(0.99),
        latency_mean_seconds=sum(latencies) / len(latencies) if latencies else None,
        latency_max_seconds=latencies[-1] if latencies else None,
    )


def throughput_timeline(records: Sequence[RequestRecord], bin_seconds: float = 1.0) -> list[float]:
    """Images per second completed in each `bin_seconds` window since the start."""
    finished = [(r.started_s + r.latency_s, r.images) for r in records if r.ok]
    if not finished:
        return []
    bins = [0.0] * (int(max(t for t, _ in finished) // bin_seconds) + 1)
    for done_at, count in finished:
        bins[int(done_at // bin_seconds)] += count / bin_seconds
    return bins
