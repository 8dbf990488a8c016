"""`imagefleet simulate`: the queueing model and the command on the shipped traces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagefleet.autoscaling.policy import Observation
from imagefleet.autoscaling.policy import Targets
from imagefleet.autoscaling.simulate import TRACES, compare, read_trace, simulate, summarize, table_rows
from imagefleet.autoscaling.simulation import Fleet
from imagefleet.autoscaling.simulation import simulate as run_simulation
from imagefleet.cli import main

FIGURES = {"replica_minutes", "slo_violation_minutes", "scale_changes"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "autoscaling.md"


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
        [(0.0, 1.0), (600.0, 1.0)], autoscaler, Fleet(), initial_replicas=4, target_p95_seconds=10.0
    )
    assert result.replica_minutes == pytest.approx(40.0, abs=0.2)
    assert result.slo_violation_minutes == 0
    assert result.scale_changes == 0
    assert 500 < result.requests < 700
    assert all(o.busy_replicas is not None and 1.0 < o.busy_replicas < 2.0 for o in seen[8:])


def test_an_overloaded_fleet_violates_and_its_queue_grows() -> None:
    seen, autoscaler = fixed(1)
    result = run_simulation(
        [(0.0, 3.0), (600.0, 3.0)], autoscaler, Fleet(), initial_replicas=1, target_p95_seconds=10.0
    )
    assert result.slo_violation_minutes >= 8
    depths = [o.queue_depth or 0.0 for o in seen]
    assert depths[-1] > depths[len(depths) // 2] > depths[0]


def test_new_replicas_hold_a_gpu_before_they_serve() -> None:
    calls = 0

    def autoscaler(observation: Observation) -> int:
        nonlocal calls
        calls += 1
        return 2

    result = run_simulation(
        [(0.0, 0.0), (600.0, 0.0)], autoscaler, Fleet(), initial_replicas=1, target_p95_seconds=10.0
    )
    # One replica from 0 s, a second from the first evaluation at 15 s.
    assert result.replica_minutes == pytest.approx(10.0 + 585 / 60, abs=0.01)
    assert result.scale_changes == 1


def test_served_rate_and_mean_batch_are_observed() -> None:
    seen, autoscaler = fixed(4)
    run_simulation([(0.0, 1.0), (600.0, 1.0)], autoscaler, Fleet(), initial_replicas=4, target_p95_seconds=10.0)
    late = seen[8:]
    assert all(o.arrival_rate is not None and 0.6 < o.arrival_rate < 1.4 for o in late)
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
        (["--min-replicas", "0"], "--min-replicas 0 needs a demand source"),
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
