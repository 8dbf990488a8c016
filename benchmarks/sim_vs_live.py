"""Replay the shipped load traces through the live emulated fleet and through the simulator, side by side.

    python benchmarks/sim_vs_live.py [--traces spike noisy-plateau] [--speedup 10] [--rate-scale 0.25]

Live: a control plane whose node agent runs every runtime pod as a real runtime process
(emulated engine: SDXL 1024², 30 steps on an A100's published timings), a Prometheus that
discovers the pods through the API server, the operator (`imagefleet run`), and an open-loop
Poisson client that sends each request to the ready endpoint of the resource's Service with
the fewest requests in flight. Everything is time-compressed by SPEEDUP: the emulated
durations (`emulation_speedup`), the trace, the autoscale interval (15 s), the scrape interval
(15 s), the scale-down window (300 s) and the p95 target. What is not compressed: the pods'
process start and the readiness probe period (5 s). So the live start-up time (pod created
to Ready, measured here) is given to the simulator multiplied by SPEEDUP; the operator's built-in start-up assumption (60 s of wall time) is 60 x SPEEDUP
seconds of trace time, and the simulator's policy gets that figure too.

Simulated: `imagefleet simulate`'s model and policy (autoscaling/simulation.py and the same
targets the command builds) with the same fleet: batch_seconds = base x (1 - c),
image_seconds = base x c, from the emulated cost model, the same batch size, queue size,
targets, window, interval and scrape interval, on the same arrivals (seed 0 is the
live run's arrivals) and on SEEDS seeds.

Printed per trace, in trace time: replica-minutes, SLO-violation minutes (minutes of arrival
whose p95 at the client is above the target; a refused request counts as over it) and
requests refused (429). Every latency is from the emulated engine (published card timings),
never a GPU measurement. Loopback only; the replay stops at the trace's end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagefleet import GROUP, PLURAL, VERSION  # noqa: E402
from imagefleet.autoscaling.policy import WINDOW_INTERVALS, Targets  # noqa: E402
from imagefleet.autoscaling.simulate import TRACES, PolicyAutoscaler, read_trace  # noqa: E402
from imagefleet.autoscaling.simulation import (  # noqa: E402
    Fleet,
    Result,
    nearest_rank_p95,
    poisson_arrivals,
    simulate,
    slo_violation_minutes,
)
from imagefleet.bench.endpoints import REFRESH_SECONDS, Endpoints, ready_endpoints  # noqa: E402
from imagefleet.dev.cluster import ControlPlane  # noqa: E402
from imagefleet.dev.prometheus import LocalPrometheus  # noqa: E402
from imagefleet.cost import builtin_plan, call_seconds  # noqa: E402
from tests.operator.harness import OperatorProcess, install_crd  # noqa: E402

NAME = "replay"
MODEL, GPU_CLASS, PRECISION, SIZE, STEPS = "sdxl", "a100-80gb", "fp16", 1024, 30
BODY = {"prompt": "a lighthouse at dusk", "response_format": "b64_json"}
# The operator's and Prometheus's defaults, in trace time.
INTERVAL_SECONDS = 15.0
SCRAPE_SECONDS = 15.0
DOWN_WINDOW_SECONDS = 300.0
# What the operator's policy assumes a new replica takes to serve (policy.Targets, wall time).
OPERATOR_STARTUP_SECONDS = Targets(1, 1, 1.0, 1.0).startup_seconds
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Settings:
    """The fleet both sides run, in trace time (the live side divides durations by `speedup`)."""

    speedup: float
    rate_scale: float
    target_p95_seconds: float
    max_replicas: int
    max_batch_size: int
    queue_size: int

    @property
    def down_window_live(self) -> int:
        return round(DOWN_WINDOW_SECONDS / self.speedup)

    def fleet(self, startup_seconds: float) -> Fleet:
        plan = builtin_plan(model=MODEL, gpu_class=GPU_CLASS, precision=PRECISION)
        base = call_seconds(plan, width=SIZE, height=SIZE, steps=STEPS, images=1)
        c = plan.class_cost.batch_cost
        return Fleet(
            batch_seconds=base * (1 - c),
            image_seconds=base * c,
            max_batch_size=self.max_batch_size,
            queue_size=self.queue_size,
            startup_seconds=startup_seconds,
            interval_seconds=INTERVAL_SECONDS,
            scrape_interval_seconds=SCRAPE_SECONDS,
            latency_window_seconds=WINDOW_INTERVALS * max(INTERVAL_SECONDS, SCRAPE_SECONDS),
        )

    def targets(self) -> Targets:
        return Targets(
            min_replicas=1,
            max_replicas=self.max_replicas,
            target_queue_depth=4.0,
            target_p95_seconds=self.target_p95_seconds,
            scale_down_stabilization_seconds=self.down_window_live * self.speedup,
            latency_window_seconds=WINDOW_INTERVALS * max(INTERVAL_SECONDS, SCRAPE_SECONDS),
            startup_seconds=OPERATOR_STARTUP_SECONDS * self.speedup,
        )

    def resource(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageModelDeployment",
            "metadata": {"name": NAME},
            "spec": {
                "model": {"name": MODEL},
                "tier": "standard",
                "precision": PRECISION,
                "gpuClass": GPU_CLASS,
                "autoscaling": {
                    "enabled": True, "minReplicas": 1, "maxReplicas": self.max_replicas, "targetQueueDepth": 4,
                    "targetP95Seconds": self.target_p95_seconds / self.speedup,
                    "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": self.down_window_live,
                },
                "batching": {"maxBatchSize": self.max_batch_size, "queueSize": self.queue_size},
                "generation": {"defaultSteps": STEPS, "defaultWidth": SIZE, "defaultHeight": SIZE},
            },
        }


@dataclass(frozen=True)
class Figures:
    replica_minutes: float
    slo_violation_minutes: int
    scale_changes: int
    requests: int
    rejected: int


def figures(latencies: Sequence[tuple[float, float]], replica_seconds: float, target: float, scale_changes: int,
            rejected: int) -> Figures:
    """From (arrival, latency) pairs in trace time; a refused request's latency is math.inf."""
    by_minute: dict[int, list[float]] = {}
    for arrival, latency in latencies:
        by_minute.setdefault(int(arrival // 60), []).append(latency)
    return Figures(replica_seconds / 60, slo_violation_minutes(by_minute, target), scale_changes, len(latencies),
                   rejected)


@dataclass
class Watch:
    """The resource, polled: GPU-holding pods over time, the Deployment's replicas, and when each
    pod was asked for and when it became a ready endpoint of the Service."""

    seen: dict[str, float] = field(default_factory=dict)  # pod uid -> first seen (monotonic)
    ready: dict[str, float] = field(default_factory=dict)  # pod uid -> first seen Ready
    serving: dict[str, float] = field(default_factory=dict)  # pod uid -> its IP first listed as a ready endpoint
    counts: list[tuple[float, int]] = field(default_factory=list)
    replicas: list[tuple[float, int]] = field(default_factory=list)  # the Deployment's spec.replicas

    def poll(self, api: client.ApiClient, namespace: str) -> None:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"imagefleet.io/name={NAME}").items
        desired = client.AppsV1Api(api).read_namespaced_deployment(NAME, namespace).spec.replicas
        endpoints = ready_endpoints(api, namespace, NAME)
        now = time.monotonic()
        self.counts.append((now, len(pods)))  # a terminating pod still holds its GPU
        self.replicas.append((now, desired))
        addresses = {url.split("//", 1)[1].rsplit(":", 1)[0] for url in endpoints}
        for pod in pods:
            uid = pod.metadata.uid
            self.seen.setdefault(uid, now)
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                self.ready.setdefault(uid, now)
                # By pod, not address: a new pod may get a deleted pod's address.
                if pod.status.pod_ip in addresses:
                    self.serving.setdefault(uid, now)

    def pod_seconds(self, start: float, end: float) -> float:
        """Integral of the pod count over [start, end] (each sample held until the next)."""
        total = 0.0
        for (at, count), (after, _) in zip(self.counts, [*self.counts[1:], (math.inf, 0)]):
            low, high = max(at, start), min(after, end)
            if high > low:
                total += count * (high - low)
        return total

    def scale_changes(self, start: float, end: float) -> int:
        inside = [count for at, count in self.replicas if start <= at <= end]
        return sum(1 for before, after in zip(inside, inside[1:]) if after != before)

    def pod_startups(self) -> list[float]:
        """Per pod: first seen to Ready (the node agent's process start, model load and probes)."""
        return [self.ready[uid] - self.seen[uid] for uid in self.ready]

    def startups(self, since: float) -> list[float]:
        """Per pod of a scale-up after `since`: from the Deployment's replicas increase that asked
        for it to its address as a ready endpoint, plus half the client's endpoint refresh period
        (the mean wait until the client reads it): the simulator's "serves startup_seconds after
        it is asked for"."""
        increases = [at for (at, after), (_, before) in zip(self.replicas[1:], self.replicas) if after > before]
        startups = []
        for uid, seen in self.seen.items():
            asked = [at for at in increases if since <= at <= seen]
            if asked and uid in self.serving:
                startups.append(self.serving[uid] - asked[-1] + REFRESH_SECONDS / 2)
        return startups


class Picker(Protocol):
    """Where to send the next request (imagefleet.bench.endpoints.Endpoints, or one fixed pod)."""

    def pick(self) -> str: ...  # a base URL; LookupError when there is none

    def release(self, url: str) -> None: ...


@dataclass
class Replayed:
    """In trace seconds: (arrival, latency) per request, the latency from the scheduled arrival
    (math.inf unless a 200); how many got a 429; how late each request left the client (its own
    share of the latency: the client's event loop on a busy machine)."""

    latencies: list[tuple[float, float]] = field(default_factory=list)
    refused: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status (-1: no answer) -> requests
    send_lags: list[tuple[float, float]] = field(default_factory=list)  # (arrival, lag)


async def replay(endpoints: Picker, arrivals: list[float], speedup: float, model: str | None = None) -> Replayed:
    """Send each request at its arrival time (trace seconds / speedup); never wait for answers
    before sending (open loop). `model`: the model group to name (requests through the gateway)."""
    body = BODY if model is None else {**BODY, "model": model}
    replayed = Replayed()
    results = replayed.latencies
    start = time.monotonic()

    async def one(http: httpx.AsyncClient, arrival: float) -> None:
        replayed.send_lags.append((arrival, (time.monotonic() - start) * speedup - arrival))
        try:
            url = endpoints.pick()
        except LookupError:  # no ready endpoint: refused, as the simulator counts it
            replayed.refused += 1
            results.append((arrival, math.inf))
            return
        try:
            response = await http.post(f"{url}/v1/images/generations", json=body)
            status = response.status_code
        except httpx.HTTPError:
            status = -1
        finally:
            endpoints.release(url)
        replayed.statuses[status] = replayed.statuses.get(status, 0) + 1
        if status == 200:
            results.append((arrival, (time.monotonic() - start) * speedup - arrival))
        else:
            replayed.refused += status == 429
            results.append((arrival, math.inf))

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=None)) as http:
        tasks = []
        for arrival in arrivals:
            delay = start + arrival / speedup - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, arrival)))
        await asyncio.gather(*tasks)
    return replayed


def print_violations(replayed: Replayed, target: float) -> None:
    """Each live SLO-violation minute with its p95 and the client's worst send lag in it (a busy
    machine shows as lag, not as serving time)."""
    by_minute: dict[int, list[float]] = {}
    for arrival, latency in replayed.latencies:
        by_minute.setdefault(int(arrival // 60), []).append(latency)
    worst_lag: dict[int, float] = {}
    for arrival, lag in replayed.send_lags:
        worst_lag[int(arrival // 60)] = max(lag, worst_lag.get(int(arrival // 60), 0.0))
    minutes = [
        f"{minute} (p95 {nearest_rank_p95(values):.0f} s, send lag <= {worst_lag.get(minute, 0.0):.1f} s)"
        for minute, values in sorted(by_minute.items()) if nearest_rank_p95(values) > target
    ]
    print(f"  live SLO-violation minutes (trace minute of arrival): {', '.join(minutes) or 'none'}", flush=True)


async def run_live(api: client.ApiClient, namespace: str, settings: Settings, trace: list[tuple[float, float]],
                   arrivals: list[float]) -> tuple[Figures, list[float], list[float]]:
    """The live figures; the start-ups of the run's scale-ups (asked to serving) and of every pod
    (seen to Ready), in wall seconds."""
    custom = client.CustomObjectsApi(api)
    watch = Watch()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, settings.resource())
    endpoints = Endpoints(api, namespace, NAME)
    deadline = time.monotonic() + 180
    while True:
        try:
            await asyncio.to_thread(watch.poll, api, namespace)
            endpoints.release(endpoints.pick())
            break
        except (LookupError, client.ApiException):  # no ready endpoint, or no Deployment yet
            if time.monotonic() > deadline:
                raise SystemExit("the first replica did not become a ready endpoint within 180 s") from None
        await asyncio.sleep(POLL_SECONDS)
    await asyncio.sleep(4 * INTERVAL_SECONDS / settings.speedup)  # a full rate window of idle samples
    start = time.monotonic()
    end = start + trace[-1][0] / settings.speedup
    sending = asyncio.create_task(replay(endpoints, arrivals, settings.speedup))
    loads = []
    while not sending.done():
        await asyncio.to_thread(watch.poll, api, namespace)
        loads.append(os.getloadavg()[0])
        await asyncio.sleep(POLL_SECONDS)
    replayed = await sending
    lags = sorted(lag for _, lag in replayed.send_lags)
    print(f"  client send lag (trace s): p50 {statistics.median(lags):.2f}, p95 {lags[int(0.95 * len(lags))]:.2f}, "
          f"max {lags[-1]:.2f}; 1-minute load average {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} cores",
          flush=True)
    print(f"  answers by HTTP status (-1: none): {dict(sorted(replayed.statuses.items()))}", flush=True)
    print_violations(replayed, settings.target_p95_seconds)
    replica_seconds = watch.pod_seconds(start, end) * settings.speedup
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    live = figures(replayed.latencies, replica_seconds, settings.target_p95_seconds, watch.scale_changes(start, end),
                   replayed.refused)
    return live, watch.startups(start), watch.pod_startups()


def run_simulated(settings: Settings, trace: list[tuple[float, float]], startup_seconds: float,
                  seeds: int) -> list[Result]:
    return [
        simulate(trace, PolicyAutoscaler(settings.targets()), settings.fleet(startup_seconds), initial_replicas=1,
                 target_p95_seconds=settings.target_p95_seconds, seed=seed)
        for seed in range(seeds)
    ]


def scaled(trace: list[tuple[float, float]], factor: float) -> list[tuple[float, float]]:
    return [(at, rate * factor) for at, rate in trace]


def spread(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, max {max(values):.2f} s"


def show(values: Sequence[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def difference(live: float, simulated: Sequence[float]) -> str:
    """The simulated mean's difference from the live figure, as a share of it."""
    mean = statistics.fmean(simulated)
    if live == 0:
        return "0" if mean == 0 else f"live 0, simulated {mean:.1f}"
    return f"{(mean - live) / live:+.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", nargs="+", default=["spike", "noisy-plateau"],
                        help="names in imagefleet/autoscaling/traces/, run one at a time in this order")
    parser.add_argument("--speedup", type=float, default=10.0, help="time compression of everything compressible")
    parser.add_argument("--rate-scale", type=float, default=0.25, help="the traces' rates are multiplied by this")
    parser.add_argument("--target-p95-seconds", type=float, default=20.0, help="trace seconds")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=5, help="simulator seeds (seed 0: the live run's arrivals)")
    args = parser.parse_args()
    settings = Settings(
        speedup=args.speedup, rate_scale=args.rate_scale, target_p95_seconds=args.target_p95_seconds,
        max_replicas=args.max_replicas, max_batch_size=args.max_batch_size, queue_size=args.queue_size,
    )
    traces = {name: scaled(read_trace(TRACES / f"{name}.csv"), settings.rate_scale) for name in args.traces}
    fleet = settings.fleet(0.0)
    peak = max(rate for trace in traces.values() for _, rate in trace)
    print(f"fleet (trace time): {MODEL} {SIZE}² {STEPS} steps on emulated {GPU_CLASS}: "
          f"{fleet.batch_seconds:.3f} s + {fleet.image_seconds:.3f} s x batch, batch <= {fleet.max_batch_size}, "
          f"queue {fleet.queue_size}, continuous batching; p95 target "
          f"{settings.target_p95_seconds:g} s, 1..{settings.max_replicas} replicas, queue target 4, window "
          f"{settings.targets().scale_down_stabilization_seconds:g} s, interval and scrape 15 s")
    print(f"compression x{settings.speedup:g}; rates x{settings.rate_scale:g} (peak {peak:g}/s in trace time, "
          f"{peak * settings.speedup:.1f} requests/s live)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="imagefleet-simlive-"))
    plane = ControlPlane(work / "control-plane", emulation_speedup=settings.speedup)
    print("starting the control plane, node agent, Prometheus and operator ...", flush=True)
    plane.up(progress=lambda message: print(f"  {message}", flush=True))
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    scrape_ms = round(SCRAPE_SECONDS * 1000 / settings.speedup)
    prometheus = LocalPrometheus(work / "prometheus", scrape_interval=f"{scrape_ms}ms",
                                 pods_kubeconfig=plane.prometheus_kubeconfig)
    operator = None
    rows = []
    try:
        prometheus.start()
        install_crd(api)
        operator = OperatorProcess(plane.kubeconfig, None, work / "operator.log", {
            "IMAGEFLEET_PROMETHEUS_URL": prometheus.url,
            "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(INTERVAL_SECONDS / settings.speedup),
        }).start()
        for name, trace in traces.items():
            namespace = f"replay-{name}"
            client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
            arrivals = poisson_arrivals(trace, random.Random(0))
            live_seconds = trace[-1][0] / settings.speedup
            print(f"\n{name}: {len(arrivals)} requests over {live_seconds:.0f} s live ...", flush=True)
            live, startups, pod_startups = asyncio.run(run_live(api, namespace, settings, trace, arrivals))
            if not startups:
                raise SystemExit(f"{name}: no scale-up, so no start-up time to give the simulator")
            startup = statistics.median(startups)
            print(f"  live pod start (seen to Ready, {len(pod_startups)} pods): {spread(pod_startups)}\n"
                  f"  live start-up (replicas raised to a ready endpoint + {REFRESH_SECONDS / 2:g} s client refresh, "
                  f"{len(startups)} pods): {spread(startups)} -> simulator {startup * settings.speedup:.0f} s",
                  flush=True)
            simulated = run_simulated(settings, trace, startup * settings.speedup, args.seeds)
            rows.append((name, live, simulated))
            print_rows(rows[-1:])
    finally:
        if operator is not None:
            operator.stop()
        prometheus.stop()
        api.close()
        plane.down()
    print("\nall traces (trace time; live: one run on seed 0's arrivals; simulated: mean ± sd over seeds):")
    print_rows(rows)


def print_rows(rows: list[tuple[str, Figures, list[Result]]]) -> None:
    print("| trace | run | replica-minutes | SLO-violation minutes | refused (429) | scale changes | requests |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, live, simulated in rows:
        series = {
            figure: [float(getattr(result, figure)) for result in simulated]
            for figure in ("replica_minutes", "slo_violation_minutes", "rejected", "scale_changes")
        }
        first = simulated[0]
        print(f"| {name} | live (emulated) | {live.replica_minutes:.1f} | {live.slo_violation_minutes} | "
              f"{live.rejected} | {live.scale_changes} | {live.requests} |")
        print(f"| | simulated, seed 0 | {first.replica_minutes:.1f} | {first.slo_violation_minutes} | "
              f"{first.rejected} | {first.scale_changes} | {first.requests} |")
        print(f"| | simulated, {len(simulated)} seeds | "
              + " | ".join(show(series[figure], 1) for figure in series) + " | |")
        print(f"| | simulated − live | {difference(live.replica_minutes, series['replica_minutes'])} | "
              f"{difference(live.slo_violation_minutes, series['slo_violation_minutes'])} | "
              f"{difference(live.rejected, series['rejected'])} | "
              f"{difference(live.scale_changes, series['scale_changes'])} | |", flush=True)

if __name__ == "__main__":
    main()
