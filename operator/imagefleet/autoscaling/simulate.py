"""`imagefleet simulate TRACE`: replay a load trace through the real policy and Kubernetes' HPA.

Both autoscalers see the same signals, the same stabilization windows and the
same Poisson arrivals; each seed is one set of arrivals, and the figures are the
mean and the sample standard deviation over the seeds.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .baseline import HpaAutoscaler
from .policy import WINDOW_INTERVALS, History, Observation, Targets, decide
from .simulation import Fleet, Result, simulate as run_simulation

TRACES = Path(__file__).with_name("traces")
FIGURES = ("replica_minutes", "slo_violation_minutes", "scale_changes", "rejected")
POLICIES = ("imagefleet", "hpa")


class PolicyAutoscaler:
    """imagefleet's policy with its history kept between evaluations."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.history = History()

    def __call__(self, observation: Observation) -> int:
        decision = decide(observation, self.targets, self.history)
        self.history = decision.history
        return decision.desired


class TraceError(click.BadParameter):
    """A trace file that cannot be replayed; the message names the row."""


def read_trace(path: Path) -> list[tuple[float, float]]:
    """Rows of `time` (seconds from the start, increasing) and `rate` (requests per second, >= 0)."""
    rows: list[tuple[float, float]] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"time", "rate"} <= set(reader.fieldnames):
            raise TraceError(f"{path}: need a header `time,rate`, got {reader.fieldnames}")
        for row in reader:
            where = f"{path}, row {reader.line_num}"
            try:
                time, rate = float(row["time"]), float(row["rate"])
            except (TypeError, ValueError):
                raise TraceError(f"{where}: `time` and `rate` must be numbers, got {row}") from None
            if not (math.isfinite(time) and math.isfinite(rate)):
                raise TraceError(f"{where}: `time` and `rate` must be finite, got time={time:g} rate={rate:g}")
            if rate < 0:
                raise TraceError(f"{where}: `rate` must be >= 0, got {rate:g}")
            if rows and time <= rows[-1][0]:
                raise TraceError(f"{where}: `time` {time:g} is not after the previous row's {rows[-1][0]:g}")
            rows.append((time, rate))
    if len(rows) < 2:
        raise TraceError(f"{path}: need at least two rows")
    return rows


@dataclass(frozen=True)
class Summary:
    """One figure over the seeds."""

    mean: float
    spread: float  # sample standard deviation

    def show(self, digits: int) -> str:
        return f"{self.mean:.{digits}f} ± {self.spread:.{digits}f}"


def summarize(results: list[Result]) -> dict[str, Summary]:
    summary = {}
    for figure in FIGURES:
        values = [float(getattr(result, figure)) for result in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[figure] = Summary(statistics.fmean(values), spread)
    return summary


def autoscalers(targets: Targets) -> dict[str, Callable[[Observation], int]]:
    return {"imagefleet": PolicyAutoscaler(targets), "hpa": HpaAutoscaler(targets).desired}


def compare(
    trace: list[tuple[float, float]],
    targets: Targets,
    fleet: Fleet,
    *,
    initial_replicas: int,
    seeds: range,
) -> dict[str, list[Result]]:
    """Both autoscalers on the same trace, seed by seed (a seed is one set of arrivals)."""
    results: dict[str, list[Result]] = {name: [] for name in POLICIES}
    for seed in seeds:
        for name, autoscaler in autoscalers(targets).items():
            results[name].append(
                run_simulation(
                    trace,
                    autoscaler,
                    fleet,
                    initial_replicas=initial_replicas,
                    target_p95_seconds=targets.target_p95_seconds,
                    seed=seed,
                )
            )
    return results


def table_rows(trace_name: str, summaries: dict[str, dict[str, Summary]]) -> list[str]:
    """The comparison as Markdown table rows (docs/autoscaling.md pins them)."""
    rows = []
    for index, name in enumerate(POLICIES):
        figures = summaries[name]
        rows.append(
            f"| {trace_name if index == 0 else ''} | {name} | {figures['replica_minutes'].show(1)} | "
            f"{figures['slo_violation_minutes'].show(1)} | {figures['scale_changes'].show(1)} | "
            f"{figures['rejected'].show(1)} |"
        )
    return rows


@click.command()
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--min-replicas", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--max-replicas", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--target-queue-depth", default=4.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Waiting requests per replica.")
@click.option("--target-p95-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--scale-down-window", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds, for both autoscalers.")
@click.option("--batch-seconds", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Fixed cost of one pipeline call.")
@click.option("--image-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Added cost per image in a batch.")
@click.option("--max-batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--startup-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Until a new replica serves.")
@click.option("--interval", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds between evaluations.")
@click.option("--scrape-interval", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds between Prometheus scrapes.")
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Runs with different Poisson arrivals (seeds 0..N-1).")
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
    scrape_interval: float,
    seeds: int,
    as_json: bool,
) -> None:
    """Replay TRACE (CSV: time,rate) through the autoscaling policy and Kubernetes' HPA.

    Prints replica-minutes, minutes whose p95 is above the target, scale changes
    and requests refused for both, as mean ± standard deviation over the seeds. Example
    traces ship in imagefleet/autoscaling/traces/.
    """
    if min_replicas == 0:
        raise click.UsageError("--min-replicas 0 needs scale from zero, which simulate does not model")
    if min_replicas > max_replicas:
        raise click.UsageError(f"--min-replicas {min_replicas} is above --max-replicas {max_replicas}")
    if scale_down_window and scale_down_window < interval:
        raise click.UsageError(
            f"--scale-down-window {scale_down_window:g} is shorter than --interval {interval:g}: "
            "it would hold no recommendation"
        )
    targets = Targets(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_queue_depth=target_queue_depth,
        target_p95_seconds=target_p95_seconds,
        scale_down_stabilization_seconds=scale_down_window,
        latency_window_seconds=WINDOW_INTERVALS * max(interval, scrape_interval),
        startup_seconds=startup_seconds,
    )
    fleet = Fleet(
        batch_seconds=batch_seconds,
        image_seconds=image_seconds,
        max_batch_size=max_batch_size,
        startup_seconds=startup_seconds,
        interval_seconds=interval,
        scrape_interval_seconds=scrape_interval,
        latency_window_seconds=targets.latency_window_seconds,
    )
    results = compare(read_trace(trace), targets, fleet, initial_replicas=min_replicas, seeds=range(seeds))
    summaries = {name: summarize(runs) for name, runs in results.items()}
    if as_json:
        click.echo(json.dumps({
            name: {figure: {key: round(value, 2) for key, value in asdict(summary).items()}
                   for figure, summary in figures.items()}
            for name, figures in summaries.items()
        }))
        return
    table = Table(title=f"{trace.name}: p95 target {target_p95_seconds:g}s, {seeds} seeds, mean ± std dev",
                  box=box.SIMPLE_HEAD)
    table.add_column("policy")
    table.add_column("replica-minutes", justify="right", no_wrap=True, min_width=15)
    table.add_column("SLO-violation minutes", justify="right")
    table.add_column("scale changes", justify="right")
    table.add_column("refused (429)", justify="right")
    for name, figures in summaries.items():
        table.add_row(name, *(figures[figure].show(1) for figure in FIGURES))
    Console().print(table)
