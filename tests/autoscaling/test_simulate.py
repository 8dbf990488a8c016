"""`imagefleet simulate`: the queueing model and the command on the shipped traces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagefleet.autoscaling.policy import Observation
from imagefleet.autoscaling.simulate import TRACES, simulate
from imagefleet.autoscaling.simulation import Fleet
from imagefleet.autoscaling.simulation import simulate as run_simulation
from imagefleet.cli import main

FIGURES = {"replica_minutes", "slo_violation_minutes", "scale_changes"}


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


@pytest.mark.parametrize("trace", sorted(TRACES.glob("*.csv")), ids=lambda p: p.stem)
def test_json_figures_for_each_shipped_trace(trace: Path) -> None:
    result = CliRunner().invoke(main, ["simulate", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert set(figures) == {"imagefleet", "baseline"}
    for name in figures:
        assert set(figures[name]) == FIGURES
        assert figures[name]["replica_minutes"] > 0


def test_table_names_both_policies() -> None:
    result = CliRunner().invoke(simulate, [str(TRACES / "spike.csv")])
    assert result.exit_code == 0, result.output
    assert "imagefleet" in result.output and "baseline" in result.output


def test_a_malformed_trace_is_a_usage_error(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("t,r\n0,1\n60,2\n")
    result = CliRunner().invoke(simulate, [str(trace)])
    assert result.exit_code == 2
    assert "time,rate" in result.output
