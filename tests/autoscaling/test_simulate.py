"""`imagefleet simulate`: the queueing model and the command on the shipped traces."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagefleet.autoscaling.policy import Observation
from imagefleet.autoscaling.policy import Targets
from imagefleet.autoscaling.simulate import TRACES, compare, read_trace, simulate, summarize, table_rows
from imagefleet.autoscaling.simulation import Fleet, histogram_quantile
from imagefleet.autoscaling.simulation import simulate as run_simulation
from imagefleet.cli import main

FIGURES = {"replica_minutes", "slo_violation_minutes", "scale_changes", "rejected"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "autoscaling.md"
# Scrapes and evaluations on the trace's clock (at 0 s and every interval), for hand-computed timings.
ALIGNED = {"scrape_offset_seconds": 0.0, "evaluation_offset_seconds": 0.0}


def fixed(replicas: int) -> tuple[list[Observation], Callable[[Observation], int]]:
    seen: list[Observation] = []

    def autoscaler(observation: Observation) -> int:
        seen.append(observation)
        return replicas

    return seen, autoscaler


def test_a_fixed_fleet_with_headroom_meets_the_slo_and_pays_for_every_minute() -> None:
    seen, autoscaler = fixed(4)
    # 1 request/s; 4 replicas serve ~2.7 requests/s one at a time: no queue to speak of.
    result = run_simulation(
        [(0.0, 1.0), (600.0, 1.0)], autoscaler, Fleet(**ALIGNED), initial_replicas=4, target_p95_seconds=10.0
    )
    assert result.replica_minutes == pytest.approx(40.0, abs=0.2)
    assert result.slo_violation_minutes == 0
    assert result.scale_changes == 0
    assert 500 < result.requests < 700
    assert all(o.busy_replicas is not None and 1.0 < o.busy_replicas < 2.0 for o in seen[8:])


def test_an_overloaded_pod_is_fronted_by_the_gateway_queue_which_refuses_what_cannot_start_in_time() -> None:
    """3 requests/s on one pod that serves at most 4 per 4.5 s: the gateway keeps a queue of what can
    still finish within the 10 s target, refuses the rest at once (429, counted as over the target),
    and the pod never holds more than its next batch."""
    seen, autoscaler = fixed(1)
    result = run_simulation(
        [(0.0, 3.0), (600.0, 3.0)], autoscaler, Fleet(**ALIGNED), initial_replicas=1, target_p95_seconds=10.0
    )
    assert result.slo_violation_minutes == 10
    loaded = seen[len(seen) // 2:]
    assert all(o.queue_depth is not None and o.queue_depth <= 4 for o in loaded)  # at most a batch at the pod
    assert all(o.gateway_queued is not None and o.gateway_queued <= 8 for o in loaded)
    assert all(o.gateway_arrival_rate is not None and 2.0 < o.gateway_arrival_rate < 4.0 for o in loaded)
    # Served: at most 4 / 4.5 s for 600 s (533); the rest of ~1800 arrivals refused.
    assert 1000 < result.rejected < 1500
    assert result.requests - result.rejected < 600


def test_with_no_ready_pod_the_gateway_holds_until_one_serves_or_the_hold_timeout() -> None:
    """The only pod starts for 30 s: what arrives meanwhile waits and is served; with a start-up
    longer than the hold timeout it is refused instead."""
    _, autoscaler = fixed(1)
    trace = [(0.0, 0.2), (120.0, 0.2)]
    held = run_simulation(trace, autoscaler, Fleet(startup_seconds=30.0, **ALIGNED), initial_replicas=0,
                          target_p95_seconds=10.0)
    assert held.rejected == 0 and held.p95_seconds > 10.0
    _, autoscaler = fixed(1)
    timed_out = run_simulation(trace, autoscaler, Fleet(startup_seconds=200.0, hold_timeout_seconds=20.0, **ALIGNED),
                               initial_replicas=0, target_p95_seconds=10.0)
    assert timed_out.rejected > 0


def test_continuous_batching_starts_at_once_and_runs_a_backlog_in_full_batches() -> None:
    """As the runtime batches: a free pod starts at once with every waiting request, up to the batch size."""
    fleet = Fleet(max_batch_size=4, **ALIGNED)
    seen, autoscaler = fixed(1)
    quiet = run_simulation([(0.0, 0.05), (1200.0, 0.05)], autoscaler, fleet, initial_replicas=1,
                           target_p95_seconds=10.0)
    # One request per 20 s on a pod busy 1.5 s per lone request: each runs alone, waiting for nothing.
    assert quiet.p95_seconds == pytest.approx(fleet.batch_time(1))
    assert {o.batch_size for o in seen if o.batch_size is not None} == {1.0}
    seen, autoscaler = fixed(1)
    run_simulation([(0.0, 3.0), (600.0, 3.0)], autoscaler, fleet, initial_replicas=1, target_p95_seconds=10.0)
    # 3 requests/s on a pod that serves at most 4 per 4.5 s: every batch takes 4 of the waiting ones.
    assert [o.batch_size for o in seen[4:]] == [4.0] * len(seen[4:])


def test_the_autoscaler_reads_what_was_last_scraped() -> None:
    """Scrapes every 10 s, evaluations every 15 s: the newest sample is 5 s or 0 s old."""
    seen, autoscaler = fixed(2)
    run_simulation([(0.0, 1.0), (120.0, 1.0)], autoscaler, Fleet(scrape_interval_seconds=10.0, **ALIGNED),
                   initial_replicas=2, target_p95_seconds=10.0)
    assert [o.metrics_age_seconds for o in seen] == [5.0, 0.0] * 3 + [5.0]
    assert all(o.queue_series == 2 for o in seen)


def test_histogram_quantile_as_prometheus_computes_it() -> None:
    bounds = (0.25, 0.5, 1.0)
    # 100 requests in (0.25, 0.5] and 3 above 1 s: rank 97.85 falls in (0.25, 0.5].
    assert histogram_quantile(0.95, bounds, [0, 100, 100, 103]) == pytest.approx(0.25 + 0.25 * 97.85 / 100)
    # In the first bucket the lower bound is 0.
    assert histogram_quantile(0.5, bounds, [10, 10, 10, 10]) == pytest.approx(0.125)
    # In the +Inf bucket: the highest finite bound.
    assert histogram_quantile(0.95, bounds, [0, 0, 1, 100]) == 1.0
    assert histogram_quantile(0.95, bounds, [0, 0, 0, 0]) is None  # NaN: no observations


def test_p95_seen_is_the_bucketed_one() -> None:
    seen, autoscaler = fixed(4)
    run_simulation([(0.0, 1.0), (600.0, 1.0)], autoscaler, Fleet(**ALIGNED), initial_replicas=4, target_p95_seconds=10.0)
    # Most requests take 1.5 s (a batch of one on a free pod), all in the (1, 2] bucket:
    # interpolated within it, the 95th percentile reads about 1 + 0.95 = 1.95 s, not ~1.5 s.
    p95s = [o.p95_seconds for o in seen[8:]]
    assert all(p is not None and 1.0 < p <= 3.0 for p in p95s), p95s
    assert statistics.median(p for p in p95s if p is not None) > 1.8


def test_new_replicas_hold_a_gpu_before_they_serve() -> None:
    calls = 0

    def autoscaler(observation: Observation) -> int:
        nonlocal calls
        calls += 1
        return 2

    result = run_simulation(
        [(0.0, 0.0), (600.0, 0.0)], autoscaler, Fleet(**ALIGNED), initial_replicas=1, target_p95_seconds=10.0
    )
    # One replica from 0 s, a second from the first evaluation at 15 s.
    assert result.replica_minutes == pytest.approx(10.0 + 585 / 60, abs=0.01)
    assert result.scale_changes == 1


def test_served_rate_and_mean_batch_are_observed() -> None:
    seen, autoscaler = fixed(4)
    run_simulation([(0.0, 1.0), (600.0, 1.0)], autoscaler, Fleet(**ALIGNED), initial_replicas=4, target_p95_seconds=10.0)
    late = seen[8:]
    assert all(o.served_rate is not None and 0.6 < o.served_rate < 1.4 for o in late)
    # Batch time is 0.5 s + 1 s per image: the mean obeys it exactly.
    assert all(o.batch_seconds == pytest.approx(0.5 + (o.batch_size or 0)) for o in late)


def test_json_gives_mean_and_spread_over_the_seeds() -> None:
    result = CliRunner().invoke(main, ["simulate", str(TRACES / "spike.csv"), "--json", "--seeds", "3"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert set(figures) == {"imagefleet", "hpa"}
    for name in figures:
        assert set(figures[name]) == FIGURES
        for figure in FIGURES:
            assert set(figures[name][figure]) == {"mean", "spread"}
        assert figures[name]["replica_minutes"]["mean"] > 0
        assert figures[name]["replica_minutes"]["spread"] > 0  # three different sets of arrivals


def test_table_names_both_policies_and_the_seeds() -> None:
    result = CliRunner().invoke(simulate, [str(TRACES / "spike.csv"), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "imagefleet" in result.output and "hpa" in result.output
    assert "2 seeds, mean ± std dev" in result.output
    assert " ± " in result.output


@pytest.mark.parametrize(
    ("rows", "row", "problem"),
    [
        ("0,1\n60,\n120,2\n", 3, "must be numbers"),
        ("0,1\n60,nan\n120,2\n", 3, "finite"),
        ("0,1\n60,-2\n120,2\n", 3, "must be >= 0"),
        ("0,1\n120,2\n60,2\n", 4, "is not after"),
        ("0,1\n0,2\n", 3, "is not after"),
    ],
    ids=["gap", "nan", "negative", "unsorted", "repeated-time"],
)
def test_a_bad_trace_is_a_one_line_error_naming_the_row(tmp_path: Path, rows: str, row: int, problem: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("time,rate\n" + rows)
    result = CliRunner().invoke(simulate, [str(trace)])
    assert result.exit_code == 2
    assert f"row {row}:" in result.output and problem in result.output


def test_a_trace_without_the_header_is_a_usage_error(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("t,r\n0,1\n60,2\n")
    result = CliRunner().invoke(simulate, [str(trace)])
    assert result.exit_code == 2
    assert "time,rate" in result.output


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--min-replicas", "5", "--max-replicas", "2"], "--min-replicas 5 is above --max-replicas 2"),
        (["--scale-down-window", "10", "--interval", "15"], "shorter than --interval"),
        (["--min-replicas", "0"], "--min-replicas 0 needs scale from zero"),
        (["--seeds", "0"], "--seeds"),
        (["--target-p95-seconds", "0"], "--target-p95-seconds"),
    ],
)
def test_contradictory_flags_are_a_usage_error(flags: list[str], problem: str) -> None:
    result = CliRunner().invoke(simulate, [str(TRACES / "spike.csv"), *flags])
    assert result.exit_code == 2, result.output
    assert problem in result.output


@pytest.mark.slow
@pytest.mark.parametrize("trace", sorted(TRACES.glob("*.csv")), ids=lambda p: p.stem)
def test_the_docs_table_is_what_simulate_prints(trace: Path) -> None:
    """docs/autoscaling.md shows every shipped trace with the default flags (5 seeds)."""
    targets = Targets(min_replicas=1, max_replicas=20, target_queue_depth=4.0, target_p95_seconds=10.0,
                      latency_window_seconds=60.0)
    results = compare(read_trace(trace), targets, Fleet(), initial_replicas=1, seeds=range(5))
    rows = table_rows(trace.stem, {name: summarize(runs) for name, runs in results.items()})
    text = DOCS.read_text()
    for row in rows:
        assert row in text, f"docs/autoscaling.md lacks {row!r}: rerun `imagefleet simulate` on {trace.name}"


def test_scrapes_and_evaluations_run_on_their_own_clocks() -> None:
    """Without fixed offsets each seed draws where scrapes and evaluations fall in their intervals:
    the samples read are then up to one scrape old, and the seed's arrivals do not change."""
    trace = [(0.0, 1.0), (600.0, 1.0)]
    seen, autoscaler = fixed(2)
    drawn = run_simulation(trace, autoscaler, Fleet(scrape_interval_seconds=10.0), initial_replicas=2,
                           target_p95_seconds=10.0, seed=3)
    aligned = run_simulation(trace, fixed(2)[1], Fleet(scrape_interval_seconds=10.0, **ALIGNED), initial_replicas=2,
                             target_p95_seconds=10.0, seed=3)
    assert drawn.requests == aligned.requests
    offsets = {round(o.time % 15.0, 9) for o in seen}
    assert len(offsets) == 1 and 0.0 < offsets.pop() < 15.0
    ages = [o.metrics_age_seconds for o in seen]
    assert all(age is not None and 0.0 <= age < 10.0 for age in ages)
    assert ages != [5.0, 0.0] * (len(ages) // 2) + [5.0] * (len(ages) % 2)


def test_queries_at_the_last_whole_step_read_older_samples() -> None:
    """KEDA has Prometheus evaluate its queries at the current whole second: with a query step, an
    evaluation reads the samples up to the last step boundary before it (here one fixed phase of
    the step against the 15 s evaluations, so one fixed age), not the scrape made with it."""
    trace = [(0.0, 1.0), (300.0, 1.0)]
    now_seen, now_autoscaler = fixed(2)
    run_simulation(trace, now_autoscaler, Fleet(scrape_interval_seconds=5.0, **ALIGNED), initial_replicas=2,
                   target_p95_seconds=10.0)
    assert {o.metrics_age_seconds for o in now_seen} == {0.0}
    stepped_seen, stepped_autoscaler = fixed(2)
    run_simulation(trace, stepped_autoscaler, Fleet(scrape_interval_seconds=5.0, query_step_seconds=15.0, **ALIGNED),
                   initial_replicas=2, target_p95_seconds=10.0)
    ages = {o.metrics_age_seconds for o in stepped_seen}
    assert len(ages) == 1 and 0.0 < ages.pop() < 20.0
