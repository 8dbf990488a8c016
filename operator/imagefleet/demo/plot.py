"""`imagefleet demo --plot FILE.png`: each resource's replicas, queue, client p95 and 429s over the run.

`Timeline` keeps what the demo read at each tick (the resources' status); the clients' side
comes from the burst's answers. `bins` and `series` are pure; `write_plot` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imagefleet.bench.plot import require_matplotlib
from imagefleet.bench.stats import percentile

from .scenario import Answer, Snapshot, target_p95

# The clients' p95 and 429s are counted in bins of this many seconds (by when a request was sent).
BIN_SECONDS = 10.0
# A bin's p95 is drawn only with this many answers in it.
MIN_BIN_ANSWERS = 5
SHED = "429"


@dataclass(frozen=True)
class Point:
    """One resource at one tick: demo clock, ready and desired replicas, queue depth (None: not known)."""

    seconds: float
    ready: int
    desired: int | None
    queue: float | None


@dataclass
class Timeline:
    """Every resource's points, tick by tick, and each one's p95 target."""

    points: dict[str, list[Point]] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)

    def record(self, seconds: float, snapshot: Snapshot) -> None:
        for name, resource in snapshot.resources.items():
            status = resource.get("status") or {}
            self.points.setdefault(name, []).append(
                Point(seconds, int(status.get("readyReplicas") or 0), status.get("desiredReplicas"),
                      status.get("queueDepth"))
            )
            target = target_p95(snapshot, name)
            if target is not None:
                self.targets[name] = target


@dataclass(frozen=True)
class Bin:
    """The requests one resource's clients sent in [start, start + BIN_SECONDS)."""

    start: float
    p95_seconds: float | None
    shed: int


def bins(answers: Sequence[Answer], resource: str, end: float) -> list[Bin]:
    """Per BIN_SECONDS from the first request sent to `resource` until `end`: p95 of the successful
    requests sent then (None with fewer than MIN_BIN_ANSWERS), and how many got 429."""
    mine = [answer for answer in answers if answer.resource == resource]
    if not mine:
        return []
    first = min(answer.sent for answer in mine)
    found = []
    for index in range(math.ceil((end - first) / BIN_SECONDS)):
        start = first + index * BIN_SECONDS
        sent = [answer for answer in mine if start <= answer.sent < start + BIN_SECONDS]
        latencies = sorted(answer.record.latency_s for answer in sent if answer.record.ok)
        p95 = percentile(latencies, 0.95) if len(latencies) >= MIN_BIN_ANSWERS else None
        found.append(Bin(start, p95, sum(1 for answer in sent if answer.record.error == SHED)))
    return found


def write_plot(timeline: Timeline, answers: Sequence[Answer], path: Path, title: str) -> None:
    """Four panels sharing the demo's clock: replicas, queue depth, client p95, 429s per second."""
    pyplot = require_matplotlib()
    figure, (replicas, queue, latency, shed) = pyplot.subplots(
        4, 1, figsize=(10, 10), sharex=True, constrained_layout=True
    )
    figure.suptitle(title)
    end = max((points[-1].seconds for points in timeline.points.values() if points), default=0.0)
    colours = dict(zip(sorted(timeline.points), pyplot.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for name, points in sorted(timeline.points.items()):
        colour = colours[name]
        times = [point.seconds for point in points]
        replicas.step(times, [point.ready for point in points], where="post", color=colour, label=f"{name} ready")
        replicas.step(times, [point.desired for point in points], where="post", color=colour, linestyle="--",
                      label=f"{name} desired")
        queue.plot(times, [point.queue for point in points], color=colour, label=name)
        resource_bins = bins(answers, name, end)
        if resource_bins:
            middles = [b.start + BIN_SECONDS / 2 for b in resource_bins]
            latency.plot(middles, [b.p95_seconds for b in resource_bins], marker="o", color=colour, label=name)
            shed.bar([b.start for b in resource_bins], [b.shed / BIN_SECONDS for b in resource_bins],
                     width=BIN_SECONDS, align="edge", color=colour, alpha=0.6, label=name)
            if name in timeline.targets:
                latency.axhline(timeline.targets[name], color=colour, linestyle=":", label=f"{name} target")
    replicas.yaxis.set_major_locator(pyplot.MaxNLocator(integer=True))
    replicas.set_ylabel("replicas")
    replicas.set_title("replicas: ready (solid) and desired by the autoscaler (dashed)")
    queue.set_ylabel("requests")
    queue.set_title("queue depth (the operator's reading from Prometheus)")
    latency.set_ylabel("seconds")
    latency.set_title(f"client p95 latency, per {BIN_SECONDS:.0f} s of requests sent (target dotted)")
    shed.set_ylabel("per second")
    shed.set_title("429s at the clients (shed by the gateway)")
    shed.set_xlabel("seconds since the demo started")
    for axes in (replicas, queue, latency, shed):
        axes.grid(alpha=0.3)
        handles, _ = axes.get_legend_handles_labels()
        if handles:
            axes.legend(fontsize="small", loc="upper left")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
