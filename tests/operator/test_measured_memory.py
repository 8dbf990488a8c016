"""Measured memory against the fit estimate: reading Prometheus's answer and planning the writes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from imagefleet.autoscaling.prometheus import Sample
from imagefleet.measuredmemory.plan import CUDA, ESTIMATE_LOW, PROCESS, Collision, Measurement, plan
from imagefleet.measuredmemory.reporter import measurements, peak_query

MIB = 1024 * 1024
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ESTIMATE = {"estimateMiB": 10_000, "limitMiB": 20_000, "capacityMiB": 22_000}


def sample(name: str, value: float, source: str, job: str = "runtime", namespace: str = "ns") -> Sample:
    labels = {"namespace": namespace, "imagefleet_io_name": name, "job": job, "source": source}
    return Sample(labels, value)


def test_the_query_reads_every_resource_peak_once_by_job_and_source() -> None:
    assert peak_query() == ('max by (namespace, imagefleet_io_name, job, source) '
                            '(imagefleet_memory_bytes{kind="peak",imagefleet_io_name!=""})')


def test_a_card_figure_wins_over_a_process_figure_and_nan_is_no_figure() -> None:
    found = measurements([
        sample("rolling", 300 * MIB, PROCESS), sample("rolling", 9_000 * MIB, CUDA),
        sample("cpu", 512.4 * MIB, PROCESS),
        sample("nan", math.nan, CUDA),
        sample("clash", 1 * MIB, CUDA), sample("clash", 2 * MIB, CUDA, job="foreign"),
    ])
    assert found[("ns", "rolling")] == Measurement(9_000, CUDA)
    assert found[("ns", "cpu")] == Measurement(512, PROCESS)
    assert ("ns", "nan") not in found
    assert found[("ns", "clash")] == Collision(("foreign", "runtime"))


def test_a_first_process_figure_is_written_and_never_compared() -> None:
    verdict = plan(Measurement(30_000, PROCESS), None, ESTIMATE, "a100-80gb", NOW)
    assert verdict.status == {"peakMiB": 30_000, "source": PROCESS, "observedTime": "2026-11-29T12:00:00Z"}
    assert verdict.warning is None


def test_a_card_peak_above_the_estimate_warns_once_per_crossing() -> None:
    first = plan(Measurement(12_000, CUDA), None, ESTIMATE, "a100-80gb", NOW)
    assert first.status is not None and first.status["peakMiB"] == 12_000
    assert first.warning is not None
    reason, message = first.warning
    assert reason == ESTIMATE_LOW
    assert "12,000 MiB" in message and "10,000 MiB" in message and "within the 20,000 MiB" in message
    # The same figure again, or one within 5 %: nothing written, nothing posted.
    assert plan(Measurement(12_000, CUDA), first.status, ESTIMATE, "a100-80gb", NOW).status is None
    assert plan(Measurement(12_500, CUDA), first.status, ESTIMATE, "a100-80gb", NOW).status is None
    # Further up, past the usable memory: written, but no second Event for the same crossing.
    higher = plan(Measurement(21_000, CUDA), first.status, ESTIMATE, "a100-80gb", NOW)
    assert higher.status is not None and higher.status["peakMiB"] == 21_000 and higher.warning is None
    # Back under the estimate (a smaller spec), then above again: a new crossing warns again.
    under = plan(Measurement(9_900, CUDA), higher.status, ESTIMATE, "a100-80gb", NOW)
    assert under.status is not None and under.warning is None
    again = plan(Measurement(21_000, CUDA), under.status, ESTIMATE, "a100-80gb", NOW)
    assert again.warning is not None
    assert "above the 20,000 MiB usable on a100-80gb" in again.warning[1]
    assert "spec.batching.maxBatchSize" in again.warning[1]


def test_crossing_the_estimate_is_written_even_within_the_change_band() -> None:
    below = plan(Measurement(9_800, CUDA), None, ESTIMATE, "a100-80gb", NOW)
    assert below.status is not None and below.warning is None
    above = plan(Measurement(10_100, CUDA), below.status, ESTIMATE, "a100-80gb", NOW)
    assert above.status is not None and above.warning is not None


def test_a_new_source_is_written_and_a_model_without_estimate_is_never_compared() -> None:
    written = {"peakMiB": 9_000, "source": PROCESS, "observedTime": "2026-11-29T11:00:00Z"}
    changed = plan(Measurement(9_000, CUDA), written, None, "a100-80gb", NOW)
    assert changed.status is not None and changed.status["source"] == CUDA
    assert changed.warning is None
