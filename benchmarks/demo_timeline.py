"""The demo's burst as a timeline: `imagefleet demo --once`, run headless, then per 10 s of the bulk
tier's burst: requests sent, 429s, the clients' p95, and the desired and ready replicas at the
bin's end. Every latency is **emulated** (the local fleet's emulated engine).

    python benchmarks/demo_timeline.py [--plot FILE.png]

It drives the demo's own code (stack, scenario, clients), so a before/after comparison runs this
same script against each version of the gateway and autoscaler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from imagefleet.demo.command import Clock, Run
from imagefleet.demo.plot import Timeline, bins, write_plot
from imagefleet.demo.scenario import BULK, apply_examples
from imagefleet.demo.stack import NAMESPACE, Stack, demo_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, default=None, help="also draw the demo's plot here")
    args = parser.parse_args()
    console = Console(highlight=False, width=200)
    clock, timeline, stack = Clock(), Timeline(), Stack(demo_dir())
    run: Run | None = None
    try:
        api = stack.up(lambda message: clock.say(console, message))
        apply_examples(api, NAMESPACE)
        run = Run(console, clock, stack, api, True, timeline)
        held = run.play()
    finally:
        stack.down()
    if run is None or run.burst is None or run.burst_started is None:
        print("the burst never started")
        return 1
    answers = run.burst.answers
    if args.plot is not None:
        write_plot(timeline, answers, args.plot, f"imagefleet demo: {NAMESPACE} (emulated GPUs)")
    points = timeline.points.get(BULK, [])
    end = max(answer.finished for answer in answers)
    mine = [answer for answer in answers if answer.resource == BULK]
    print(f"\n{BULK} (bulk tier), burst began at {run.burst_started:.0f} s on the demo's clock; "
          f"target p95 {timeline.targets.get(BULK, float('nan')):g} s; emulated")
    print(f"{'bin':>9}  {'sent':>5}  {'429':>5}  {'client p95':>10}  {'desired':>7}  {'ready':>5}")
    for found in bins(answers, BULK, end):
        stop = found.start + 10.0
        sent = sum(1 for answer in mine if found.start <= answer.sent < stop)
        before = [point for point in points if point.seconds < stop]
        desired = before[-1].desired if before else None
        ready = before[-1].ready if before else None
        p95 = "-" if found.p95_seconds is None else f"{found.p95_seconds:.1f} s"
        print(f"{found.start - run.burst_started:+8.0f}s  {sent:>5}  {found.shed:>5}  {p95:>10}  "
              f"{'-' if desired is None else desired:>7}  {'-' if ready is None else ready:>5}")
    shed = sum(1 for answer in mine if answer.record.error == "429")
    print(f"total: {len(mine)} answers, {shed} of them 429; the demo's checks {'held' if held else 'failed'}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
