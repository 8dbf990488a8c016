"""`imagefleet demo`: a GPU fleet managed end to end on this machine, no cluster, GPU or download needed."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import FrameType

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from kubernetes import client
from rich.text import Text

from imagefleet.demo.scenario import (
    BULK,
    BULK_BODY,
    BULK_CONCURRENCY,
    BURST_SECONDS,
    GROUP_NAME,
    PREMIUM,
    PREMIUM_BODY,
    PREMIUM_CONCURRENCY,
    WINDOW_SECONDS,
    Burst,
    Expectation,
    Snapshot,
    WindowFigures,
    apply_examples,
    burst_expectations,
    read_snapshot,
    settle_expectations,
    target_p95,
    window_figures,
)
from imagefleet.bench.plot import require_matplotlib
from imagefleet.demo.plot import Timeline, write_plot
from imagefleet.demo.stack import NAMESPACE, Stack, demo_dir
from imagefleet.demo.table import before_after_view, fleet_view, last_decision
from imagefleet.dev.errors import DevError

TICK_SECONDS = 1.0
LOG_WIDTH = 140
# --once gives up when the resources have not settled since they were applied, or the
# burst has not scaled them since it started, within these.
SETTLE_TIMEOUT_SECONDS = 300.0
SCALE_TIMEOUT_SECONDS = BURST_SECONDS + 30.0


@click.command()
@click.option("--once", is_flag=True, help="Run the scripted scenario once, print the final state and exit "
              "0 only if every expectation held.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="At the end, draw each resource's replicas, queue, client p95 and 429s over time into this PNG "
              "(needs imagefleet[plot]).")
def demo(once: bool, plot: Path | None) -> None:
    """Run a simulated GPU fleet locally and watch imagefleet manage it.

    Starts a local control plane with simulated GPU nodes whose runtime pods are
    real runtime processes at loopback pod IPs (an emulated GPU engine: it takes
    the time a real card would, from published figures), Prometheus discovering
    those pods, the operator and the gateway; applies the sample resources in
    examples/, sends a burst through the gateway (model `images`: quality low to
    the bulk tier, high to the premium tier) and shows each resource's tier,
    replicas, queue, p95 (the operator's and the clients') and last scaling
    decision until Ctrl-C; then tears everything down.
    """
    # Piped output (logs, CI) has no width to fit: give the table room.
    if plot is not None:
        require_matplotlib()  # fail before anything starts, not after the run
    console = Console(highlight=False, width=None if sys.stdout.isatty() else LOG_WIDTH)
    clock = Clock()
    timeline = Timeline()
    run: Run | None = None
    stack = Stack(demo_dir())
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        api = stack.up(lambda message: clock.say(console, message))
        names = apply_examples(api, NAMESPACE)
        clock.say(console, f"applied {', '.join(names)} from examples/ in namespace {NAMESPACE}")
        clock.say(console, f"watch it with: kubectl --kubeconfig {stack.kubeconfig} -n {NAMESPACE} get imd,pods -o wide")
        run = Run(console, clock, stack, api, once, timeline)
        held = run.play()
    except KeyboardInterrupt:
        held = None
    except DevError as error:
        console.print(f"[red]error:[/] {error}")
        held = False
    finally:
        clock.say(console, "tearing down")
        stack.down()
        clock.say(console, f"stopped everything; logs are in {stack.logs} and {stack.plane.logs_dir}")
        if plot is not None:
            answers = run.burst.answers if run is not None and run.burst is not None else []
            write_plot(timeline, answers, plot, f"imagefleet demo: {NAMESPACE} (emulated GPUs)")
            clock.say(console, f"wrote {plot}")
    if once and not held:
        sys.exit(1)


class Run:
    """The scenario, one tick at a time: read the fleet, check, show."""

    def __init__(
        self, console: Console, clock: Clock, stack: Stack, api: client.ApiClient, once: bool, timeline: Timeline
    ) -> None:
        self.console = console
        self.timeline = timeline
        self.clock = clock
        self.stack = stack
        self.api = api
        self.once = once
        self.settle = settle_expectations()
        self.demand, self.scale = burst_expectations()
        self.holds_p95 = Expectation(
            f"{BULK} (bulk): at the burst's end, after the scale-up, p95 at the clients is under its target "
            "and nothing is shed or failed", self._bulk_p95_held
        )
        self.burst: Burst | None = None
        self.applied_at = clock.elapsed()
        self.burst_started: float | None = None
        self.desired: dict[str, int | None] = {}

    @property
    def expectations(self) -> list[Expectation]:
        return [*self.settle, self.demand, self.scale, self.holds_p95]

    def _burst_end(self) -> tuple[float, float] | None:
        """The burst's last WINDOW_SECONDS, once the burst is over and if the scale-up was ready before it.

        Not "from the scale-up on": the first scale-up is rarely the last, and while the fleet still
        grows the gateway sheds what the ready pods cannot serve within the target."""
        if self.burst is None or self.burst.running or self.burst_started is None:
            return None
        end = self.burst_started + BURST_SECONDS
        met = self.scale.met_after_seconds
        if met is None or met > end - WINDOW_SECONDS:
            return None
        return end - WINDOW_SECONDS, end

    def _bulk_p95_held(self, snapshot: Snapshot) -> bool:
        window, target = self._burst_end(), target_p95(snapshot, BULK)
        if window is None or target is None or self.burst is None:
            return False
        after = window_figures(self.burst.answers, BULK, *window)
        return after.p95_seconds is not None and after.p95_seconds < target and after.errors == 0

    def play(self) -> bool:
        """Until every expectation held (--once) or Ctrl-C; whether they all held."""
        live = nullcontext() if self.once else Live(console=self.console, refresh_per_second=2)
        snapshot = Snapshot({}, frozenset())
        try:
            with live as display:
                while not (self.once and self._finished()):
                    snapshot = self._tick()
                    if display is not None:
                        display.update(self._view(snapshot))
                    time.sleep(TICK_SECONDS)
        finally:
            if self.burst is not None:
                self.burst.stop()
        held = all(e.met_after_seconds is not None for e in self.expectations)
        if self.once:
            self.console.print(self._view(snapshot))
            if self.burst is not None and self.burst_started is not None:
                after = self._burst_end()
                self.console.print(
                    before_after_view(
                        snapshot.resources, self.burst.answers, (self.burst_started, self.burst_started + WINDOW_SECONDS),
                        after,
                    )
                )
            if not held:
                self.console.print(f"[red]not every expectation held[/]: see the logs in {self.stack.logs}")
        return held

    def _tick(self) -> Snapshot:
        if not self.stack.operator_alive():
            raise DevError(f"the operator exited: see {self.stack.logs / 'operator.log'}")
        if not self.stack.gateway_alive():
            raise DevError(f"the gateway exited: see {self.stack.logs / 'gateway.log'}")
        snapshot = read_snapshot(self.api, NAMESPACE)
        now = self.clock.elapsed()
        self.timeline.record(now, snapshot)
        for expectation in self.expectations if self.burst is not None else self.settle:
            before = expectation.met_after_seconds
            expectation.update(snapshot, now)
            if before is None and expectation.met_after_seconds is not None:
                self.clock.say(self.console, f"[green]✓[/] {expectation.description}")
        self._report_scaling(snapshot)
        if self.burst is None and all(e.met_after_seconds is not None for e in self.settle):
            self._start_burst()
        return snapshot

    def _start_burst(self) -> None:
        url = self.stack.gateway_url
        self.burst = Burst(
            {BULK: (url, BULK_BODY, BULK_CONCURRENCY), PREMIUM: (url, PREMIUM_BODY, PREMIUM_CONCURRENCY)},
            self.clock.elapsed,
        )
        self.burst.start()
        self.burst_started = self.clock.elapsed()
        self.clock.say(
            self.console,
            f"burst through the gateway ({url}), model {GROUP_NAME}: {BULK_CONCURRENCY} requests in flight at "
            f"quality low ({BULK}, bulk), {PREMIUM_CONCURRENCY} at quality high ({PREMIUM}, premium), for "
            f"{BURST_SECONDS:.0f} s; the gateway sends each to the least-loaded ready pod",
        )

    def _report_scaling(self, snapshot: Snapshot) -> None:
        """Say when a resource's desired replicas change, with the autoscaler's reason."""
        for name, resource in sorted(snapshot.resources.items()):
            desired = (resource.get("status") or {}).get("desiredReplicas")
            previous = self.desired.get(name)
            self.desired[name] = desired
            if previous is not None and desired is not None and desired != previous:
                reason, message = last_decision(resource.get("status") or {})
                self.clock.say(self.console, f"{name}: desired replicas {previous} -> {desired} ({reason}: {message})")

    def _finished(self) -> bool:
        now = self.clock.elapsed()
        if all(e.met_after_seconds is not None for e in self.expectations):
            return True
        if self.burst_started is None:
            return now - self.applied_at > SETTLE_TIMEOUT_SECONDS
        return now - self.burst_started > SCALE_TIMEOUT_SECONDS

    def _recent(self) -> dict[str, WindowFigures]:
        """Each loaded resource's figures at the clients over the last WINDOW_SECONDS."""
        if self.burst is None:
            return {}
        now = self.clock.elapsed()
        return {
            name: window_figures(self.burst.answers, name, now - WINDOW_SECONDS, now) for name in self.burst.targets
        }

    def _view(self, snapshot: Snapshot) -> RenderableType:
        lines: list[RenderableType] = [
            fleet_view(snapshot.resources.values(), title=self._headline(), clients=self._recent())
        ]
        for expectation in self.expectations:
            met = expectation.met_after_seconds
            mark = f"[green]✓[/] ({met:.0f} s)" if met is not None else "[red]✗[/]" if self.once else "…"
            lines.append(Text.from_markup(f"{mark} {expectation.description}"))
        if self.burst is not None:
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.burst.errors.items())) or "no errors"
            lines.append(Text(f"burst: {self.burst.sent} requests answered ({errors})"))
        return Group(*lines)

    def _headline(self) -> str:
        if self.once:
            return f"final state after {self.clock.elapsed():.0f} s"
        if self.burst is None:
            return "waiting for the operator to settle the sample resources"
        if self.burst.running:
            return f"burst running ({self.clock.elapsed() - (self.burst_started or 0):.0f} s)"
        return "burst over; Ctrl-C stops the demo and tears everything down"


class Clock:
    """Seconds since the demo started, for progress lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, console: Console, message: str) -> None:
        console.print(f"[dim]{self.elapsed():6.1f}s[/] {message}", soft_wrap=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
