"""`--plot`: latency histogram and throughput over time, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import click

from imagefleet.bench.stats import RequestRecord, percentile, throughput_timeline


def require_matplotlib() -> ModuleType:
    """Import matplotlib (the `plot` extra) with the headless backend, or say how to get it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise click.UsageError("--plot needs matplotlib: pip install 'imagefleet[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def write_plot(records: Sequence[RequestRecord], path: Path, title: str) -> None:
    """Draw the successful requests' latencies and the images/s in each second of the run."""
    pyplot = require_matplotlib()
    latencies = sorted(r.latency_s for r in records if r.ok)
    timeline = throughput_timeline(records)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    figure.suptitle(title)
    left.hist(latencies, bins=min(50, max(10, len(latencies) // 5)), color="tab:blue")
    if latencies:
        for q, style in ((0.50, "--"), (0.95, "-"), (0.99, ":")):
            value = percentile(latencies, q)
            left.axvline(value, color="black", linestyle=style, label=f"p{q * 100:.0f} {value:.3f} s")
        left.legend()
    left.set_xlabel("latency (s)")
    left.set_ylabel("requests")
    left.set_title("latency")
    right.bar(range(len(timeline)), timeline, width=1.0, align="edge", color="tab:green")
    right.set_xlabel("time since start (s)")
    right.set_ylabel("images/s")
    right.set_title("throughput")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
