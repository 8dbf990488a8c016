"""`imagefleet simulate-pool [TRACE]...`: replay per-request multi-model traces through a pool and
through one resource per model with scale from zero, and print the figures with the goals.

A command of its own rather than a mode of `imagefleet simulate`: that one replays a rate trace
(`time,rate`) through one resource's autoscaler against the HPA; this one reads one row per
request (model, adapters, steps, images) and compares two shapes of fleet.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .replay import ArmResult, Comparison, Setup, compare
from .trace import SHIPPED, read_requests, synthetic, write_requests

# The goals of shared pools against one resource per model, at no more SLO-violation minutes.
GOAL_GPU_MINUTES_SAVED = 0.5
GOAL_HIT_RATE = 0.9

FIGURES: dict[str, Callable[[ArmResult], float]] = {
    "GPU-minutes": lambda r: r.gpu_minutes,
    "SLO-violation minutes": lambda r: r.slo_violation_minutes,
    "hit rate": lambda r: r.hit_rate,
    "checkpoint swap p95 s": lambda r: r.checkpoint_swap_p95_seconds,
    "adapter load p95 s": lambda r: r.adapter_load_p95_seconds,
    "swaps per minute": lambda r: r.swaps_per_minute,
    "latency p95 s": lambda r: r.p95_seconds,
    "pods started": lambda r: r.pods_started,
}


def goals(runs: list[Comparison]) -> dict[str, bool]:
    """Each goal, met when it holds on the mean over the runs."""
    pool_slo = statistics.fmean(c.pool.slo_violation_minutes for c in runs)
    model_slo = statistics.fmean(c.per_model.slo_violation_minutes for c in runs)
    return {
        f">= {GOAL_GPU_MINUTES_SAVED:.0%} fewer GPU-minutes": statistics.fmean(
            c.gpu_minutes_saved for c in runs) >= GOAL_GPU_MINUTES_SAVED,
        f">= {GOAL_HIT_RATE:.0%} of requests without a swap": statistics.fmean(
            c.pool.hit_rate for c in runs) >= GOAL_HIT_RATE,
        "no more SLO-violation minutes": pool_slo <= model_slo,
    }


def summary(runs: list[Comparison]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample standard deviation of each figure, per arm."""
    result: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in ("pool", "per_model"):
        result[arm] = {}
        for name, figure in FIGURES.items():
            values = [float(figure(getattr(c, arm))) for c in runs]
            result[arm][name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return result


def table_rows(runs: list[Comparison]) -> list[str]:
    """The mean ± sd of each figure as Markdown table rows (docs/pools-replay.md pins them)."""
    figures = summary(runs)
    return [f"| {name} | " + " | ".join(f"{_show(name, figures[arm][name][0])} ± {_show(name, figures[arm][name][1])}"
                                        for arm in ("pool", "per_model")) + " |"
            for name in FIGURES]


@click.command("simulate-pool")
@click.argument("traces", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Without TRACES: synthetic traces of seeds 0..N-1 (seed 0 is the shipped trace).")
@click.option("--family", default="sdxl", show_default=True, help="The pool's catalog model family.")
@click.option("--gpu-class", default="h100-80gb", show_default=True)
@click.option("--target-p95-seconds", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--gpu-budget-mib", type=click.FloatRange(min=0, min_open=True),
              help="GPU MiB for checkpoints per pod [default: the card's usable memory less one call of 8 "
                   "images at the native size with the shared components].")
@click.option("--host-budget-mib", default=65536.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--adapter-slots", default=16, show_default=True, type=click.IntRange(min=0))
@click.option("--write-trace", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the synthetic trace of seed 0 (the shipped one) to this file and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def simulate_pool(traces: tuple[Path, ...], seeds: int, family: str, gpu_class: str, target_p95_seconds: float,
                  gpu_budget_mib: float | None, host_budget_mib: float, adapter_slots: int,
                  write_trace: Path | None, as_json: bool) -> None:
    """Replay per-request traces (CSV: time, model, adapters or adapter_count, steps, images) through
    a shared pool and through one resource per model scaling from zero, at the same p95 target.

    Without TRACES, replays the synthetic traces of seeds 0..N-1 (Zipf popularity: 80 checkpoints,
    10 % of requests with a LoRA out of 500). Figures are the emulated cost model's.
    """
    if write_trace is not None:
        write_requests(write_trace, synthetic(0))
        return
    setup = Setup(family=family, gpu_class=gpu_class, target_p95_seconds=target_p95_seconds,
                  gpu_budget_mib=gpu_budget_mib, host_budget_mib=host_budget_mib, adapter_slots=adapter_slots)
    named = ([(path.name, read_requests(path)) for path in traces] if traces
             else [(f"seed {seed}" + (f" ({SHIPPED.name})" if seed == 0 else ""), synthetic(seed))
                   for seed in range(seeds)])
    runs = [(name, compare(requests, setup)) for name, requests in named]
    comparisons = [c for _, c in runs]
    met = goals(comparisons)
    if as_json:
        click.echo(json.dumps({
            "runs": {name: {"pool": asdict(c.pool), "per_model": asdict(c.per_model),
                            "gpu_minutes_saved": c.gpu_minutes_saved} for name, c in runs},
            "summary": summary(comparisons),
            "goals": met,
        }))
        return
    console = Console()
    table = Table(title=f"{family} on {gpu_class}, p95 target {target_p95_seconds:g}s, emulated cost model",
                  box=box.SIMPLE_HEAD)
    for column in ("trace", "GPU-min pool", "GPU-min per model", "saved", "SLO-min pool", "SLO-min per model",
                   "hit rate pool"):
        table.add_column(column, justify="left" if column == "trace" else "right")
    for name, c in runs:
        table.add_row(name, f"{c.pool.gpu_minutes:.1f}", f"{c.per_model.gpu_minutes:.1f}",
                      f"{c.gpu_minutes_saved:.1%}", str(c.pool.slo_violation_minutes),
                      str(c.per_model.slo_violation_minutes), f"{c.pool.hit_rate:.1%}")
    console.print(table)
    figures = summary(comparisons)
    means = Table(title=f"mean ± sd over {len(runs)} traces", box=box.SIMPLE_HEAD)
    for column in ("figure", "pool", "per model"):
        means.add_column(column, justify="left" if column == "figure" else "right")
    for name in FIGURES:
        means.add_row(name, *(f"{_show(name, figures[arm][name][0])} ± {_show(name, figures[arm][name][1])}"
                              for arm in ("pool", "per_model")))
    console.print(means)
    console.print("hit rate: the pool's requests that moved nothing; per model, those that waited for no cold start")
    saved = statistics.fmean(c.gpu_minutes_saved for c in comparisons)
    console.print(f"GPU-minutes saved by the pool: {saved:.1%} (mean over {len(runs)} traces)")
    for goal, ok in met.items():
        console.print(f"goal {goal}: {'met' if ok else 'missed'}")


def _show(name: str, value: float) -> str:
    return f"{value:.1%}" if name == "hit rate" else f"{value:.2f}" if name.endswith(" s") else f"{value:.1f}"
