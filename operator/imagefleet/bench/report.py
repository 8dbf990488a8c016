"""How a bench summary is shown: a table for people, JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from rich.table import Table

from imagefleet.bench.stats import Summary


def to_json(summary: Summary, target: dict[str, Any]) -> str:
    """The `--json` document: the figures plus what was measured."""
    return json.dumps({"target": target, **asdict(summary)}, indent=2)


def to_table(summary: Summary) -> Table:
    """The human report."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("requests", f"{summary.requests} ({summary.succeeded} ok, {summary.failed} failed)")
    table.add_row("wall time", f"{summary.wall_seconds:.2f} s")
    table.add_row("latency p50", _seconds(summary.latency_p50_seconds))
    table.add_row("latency p95", _seconds(summary.latency_p95_seconds))
    table.add_row("latency p99", _seconds(summary.latency_p99_seconds))
    table.add_row("latency max", _seconds(summary.latency_max_seconds))
    table.add_row("images/min", f"{summary.images_per_minute:.1f}")
    table.add_row("requests/s", f"{summary.requests_per_second:.2f}")
    errors = ", ".join(f"{key}: {count}" for key, count in summary.errors.items())
    table.add_row("errors", errors or "none")
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"
