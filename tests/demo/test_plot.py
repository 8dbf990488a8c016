"""`imagefleet demo --plot`: the clients' bins and the PNG, from a run's timeline and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagefleet.bench.stats import RequestRecord
from imagefleet.demo.plot import BIN_SECONDS, Bin, Timeline, bins, write_plot
from imagefleet.demo.scenario import Answer, Snapshot


def answer(resource: str, sent: float, latency: float, error: str | None = None) -> Answer:
    return Answer(resource, sent, sent + latency, RequestRecord(sent, latency, error, 0 if error else 1))


def resource(name: str, ready: int, desired: int, queue: float, target: float | None) -> dict[str, Any]:
    autoscaling = {"enabled": True} if target is None else {"enabled": True, "targetP95Seconds": target}
    return {"metadata": {"name": name}, "spec": {"autoscaling": autoscaling},
            "status": {"readyReplicas": ready, "desiredReplicas": desired, "queueDepth": queue}}


def test_bins_count_the_p95_and_the_429s_of_the_requests_sent_in_each() -> None:
    answers = [answer("a", 100.0 + i, latency=float(i + 1)) for i in range(6)]  # 1..6 s, all in the first bin
    answers += [answer("a", 111.0, 1.0, error="429"), answer("a", 112.0, 1.0, error="429"), answer("a", 113.0, 2.0)]
    answers += [answer("b", 100.0, 9.0)]
    assert bins(answers, "a", end=120.0) == [Bin(100.0, 6.0, 0), Bin(100.0 + BIN_SECONDS, None, 2)]
    assert bins(answers, "nobody", end=120.0) == []


def test_the_timeline_keeps_each_resource_and_its_target() -> None:
    timeline = Timeline()
    timeline.record(1.0, Snapshot({"a": resource("a", 0, 1, 0, 30.0), "b": resource("b", 1, 1, 2, None)}, frozenset()))
    timeline.record(2.0, Snapshot({"a": resource("a", 1, 2, 5, 30.0)}, frozenset()))
    assert [(p.seconds, p.ready, p.desired, p.queue) for p in timeline.points["a"]] == [(1.0, 0, 1, 0), (2.0, 1, 2, 5)]
    assert timeline.targets == {"a": 30.0}


def test_write_plot_draws_a_png(tmp_path: Path) -> None:
    timeline = Timeline()
    answers = []
    for second in range(0, 120, 2):
        ready = 1 if second < 60 else 3
        timeline.record(float(second), Snapshot({
            "thumbnails": resource("thumbnails", ready, 3 if second >= 40 else 1, max(0, 40 - second) / 2, 30.0),
            "renders": resource("renders", 1, 1, 0, 20.0),
            "refused": {"metadata": {"name": "refused"}, "spec": {}, "status": {}},  # no Deployment, no figures
        }, frozenset()))
        answers += [answer("thumbnails", float(second), 36.0 if second < 60 else 18.0,
                           error="429" if second < 50 and second % 4 == 0 else None) for _ in range(4)]
        answers.append(answer("renders", float(second), 7.0))
    path = tmp_path / "demo.png"
    write_plot(timeline, answers, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
