"""`imagefleet simulate TRACE`: replay a load trace through the real policy and an HPA-like baseline."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .baseline import HpaLikeAutoscaler
from .policy import WINDOW_INTERVALS, History, Observation, Targets, decide
from .simulation import Fleet, Result, simulate as run_simulation

TRACES = Path(__file__).with_name("traces")
FIGURES = ("replica_minutes", "slo_violation_minutes", "scale_changes")


class PolicyAutoscaler:
    """imagefleet's policy with its history kept between evaluations."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.history = History()

    def __call__(self, observation: Observation) -> int:
        decision = decide(observation, self.targets, self.history)
        self.history = decision.history
        return decision.desired


def read_trace(path: Path) -> list[tuple[float, float]]:
    """Rows of `time` (seconds from the start) and `rate` (requests per second), with a header."""
    try:
        with path.open(newline="") as handle:
            rows = [(float(row["time"]), float(row["rate"])) for row in csv.DictReader(handle)]
    except (KeyError, ValueError) as error:
        raise click.BadParameter(f"{path}: need a header `time,rate` and numbers below it ({error})") from error
    if len(rows) < 2 or any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
        raise click.BadParameter(f"{path}: need at least two rows with increasing `time`")
    if any(rate < 0 for _, rate in rows):
        raise click.BadParameter(f"{path}: `rate` must be >= 0")
    return rows


def compare(
    trace: list[tuple[float, float]],
    targets: Targets,
    fleet: Fleet,
    *,
    initial_replicas: int,
    seed: int,
    baseline_with_utilization: bool = False,
) -> dict[str, Result]:
    """Both autoscalers on the same trace and the same arrivals (same seed)."""
    return {
        name: run_simulation(
            trace,
            autoscaler,
            fleet,
            initial_replicas=initial_replicas,
            target_p95_seconds=targets.target_p95_seconds,
            seed=seed,
        )
        for name, autoscaler in (
            ("imagefleet", PolicyAutoscaler(targets)),
            ("baseline", HpaLikeAutoscaler(targets, with_utilization=baseline_with_utilization).desired),
        )
    }


@click.command()
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--min-replicas", default=1, show_default=True)
@click.option("--max-replicas", default=20, show_default=True)
@click.option("--target-queue-depth", default=4.0, show_default=True, help="Waiting requests per replica.")
@click.option("--target-p95-seconds", default=10.0, show_default=True)
@click.option("--scale-down-window", default=300.0, show_default=True, help="Seconds (imagefleet's policy).")
@click.option("--batch-seconds", default=0.5, show_default=True, help="Fixed cost of one pipeline call.")
@click.option("--image-seconds", default=1.0, show_default=True, help="Added cost per image in a batch.")
@click.option("--max-batch-size", default=4, show_default=True)
@click.option("--startup-seconds", default=60.0, show_default=True, help="Until a new replica serves.")
@click.option("--interval", default=15.0, show_default=True, help="Seconds between evaluations.")
@click.option("--seed", default=0, show_default=True, help="Seed of the Poisson arrivals.")
@click.option(
    "--baseline-with-utilization",
    is_flag=True,
    help="Give the baseline the busy-replicas signal too (by default it sees queue depth and p95 only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def simulate(
    trace: Path,
    min_replicas: int,
    max_replicas: int,
    target_queue_depth: float,
    target_p95_seconds: float,
    scale_down_window: float,
    batch_seconds: float,
    image_seconds: float,
    max_batch_size: int,
    startup_seconds: float,
    interval: float,
    seed: int,
    baseline_with_utilization: bool,
    as_json: bool,
) -> None:
    """Replay TRACE (CSV: time,rate) through the autoscaling policy and an HPA-like baseline.

    Prints replica-minutes, minutes whose p95 is above the target, and scale
    changes for both. Example traces ship in imagefleet/autoscaling/traces/.
    """
    try:
        targets = Targets(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_queue_depth=target_queue_depth,
            target_p95_seconds=target_p95_seconds,
            scale_down_stabilization_seconds=scale_down_window,
            latency_window_seconds=WINDOW_INTERVALS * interval,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    fleet = Fleet(
        batch_seconds=batch_seconds,
        image_seconds=image_seconds,
        max_batch_size=max_batch_size,
        startup_seconds=startup_seconds,
        interval_seconds=interval,
        latency_window_seconds=targets.latency_window_seconds,
    )
    results = compare(
        read_trace(trace),
        targets,
        fleet,
        initial_replicas=min_replicas,
        seed=seed,
        baseline_with_utilization=baseline_with_utilization,
    )
    if as_json:
        figures = {name: {key: round(asdict(result)[key], 2) for key in FIGURES} for name, result in results.items()}
        click.echo(json.dumps(figures))
        return
    table = Table(title=f"{trace.name}: p95 target {target_p95_seconds:g}s")
    table.add_column("policy")
    table.add_column("replica-minutes", justify="right")
    table.add_column("SLO-violation minutes", justify="right")
    table.add_column("scale changes", justify="right")
    table.add_column("overall p95 (s)", justify="right")
    for name, result in results.items():
        table.add_row(
            name,
            f"{result.replica_minutes:.1f}",
            str(result.slo_violation_minutes),
            str(result.scale_changes),
            f"{result.p95_seconds:.1f}",
        )
    Console().print(table)
