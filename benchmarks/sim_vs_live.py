"""Replay the shipped load traces through the live emulated fleet, behind the real gateway, with
imagefleet's autoscaler or KEDA + the HPA in charge, and through the simulator, side by side.

    python benchmarks/sim_vs_live.py --traces spike --policy both [--speedup 15] [--rate-scale 0.25]

Live: a control plane whose node agent runs every runtime pod as a real runtime process
(emulated engine: SDXL 1024², 30 steps on an A100's published timings), a Prometheus that
discovers the pods through the API server and scrapes the gateway, the operator (`imagefleet
run`), `imagefleet gateway` (its queue by deadline, its demand series), and an open-loop
Poisson client that sends every request to the gateway. `--policy imagefleet`: the resource's
autoscaling is on. `--policy keda`: it is off, and the ScaledObject of docs/keda.md (queue
depth, busy replicas, the gateway's queued requests) drives kube-controller-manager's HPA
through KEDA's operator and metrics server, on the same resource, arrivals and seeds.

Everything is time-compressed by SPEEDUP, for both policies: the emulated durations
(`emulation_speedup`), the trace, the operator's interval (15 s), the scrape interval (15 s),
the rate window (4 scrapes), the scale-down window (300 s), the p95 target (the gateway's
deadline), the gateway's hold timeout (180 s), the HPA's sync period (15 s,
--horizontal-pod-autoscaler-sync-period), its scale-up and scale-down policy periods (15 s) and
KEDA's pollingInterval (30 s); each is printed. What is not compressed: the pods' process start
and the readiness probe period (5 s). So the live start-up time (the Deployment's replicas raised
to the pod's address as a ready endpoint, measured here) is given to the simulator multiplied by
SPEEDUP; the operator's built-in start-up assumption (60 s of wall time) is 60 x SPEEDUP seconds
of trace time, and the simulator's policy gets that figure too. Likewise for KEDA: the HPA's
sync period as it ran (the mean interval between its status writes with new readings: the
compressed 1 s plus each sync's own duration, which is not compressed) is the simulator's
evaluation interval, and KEDA has Prometheus evaluate its queries at the whole second of wall
time, SPEEDUP seconds of trace time (`Fleet.query_step_seconds`).

Simulated: `imagefleet simulate`'s model (autoscaling/simulation.py) with the same fleet:
batch_seconds = base x (1 - c), image_seconds = base x c, from the emulated cost model, the
same batch size, targets, window, interval and scrape interval, on the same arrivals (seed 0 is
the live run's arrivals) and on SEEDS seeds; imagefleet's policy, or the HPA model
(autoscaling/baseline.py) given the ScaledObject's metrics (baseline.KEDA_SCALED_OBJECT).

Printed per trace and policy, in trace time: replica-minutes, SLO-violation minutes (minutes of
arrival whose p95 at the client is above the target; a refused request counts as over it),
requests refused (429, and 503 after the hold timeout), scale changes, and the time from the
trace's largest load step to the first scale-up after it. `--keda-metrics-down SECONDS` (with
`--policy keda`) stops KEDA's metrics server at that load step for SECONDS of trace time: a
fault run, whose figures show what the HPA does without its metrics (it holds), not a setting
to compare. With KEDA, the run also prints its timeline (per pod: first seen, first scraped,
Ready, serving; the HPA's readings of the three triggers before each raise) beside the model's
readings on seed 0, the per-step evidence of where live and simulated decisions part.
Every latency is from the emulated engine (published card timings), never a GPU
measurement. Loopback only; the replay stops at the trace's end.
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
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagefleet import GROUP, PLURAL, VERSION  # noqa: E402
from imagefleet.autoscaling.baseline import KEDA_SCALED_OBJECT, HpaAutoscaler  # noqa: E402
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
from imagefleet.bench.endpoints import ready_endpoints  # noqa: E402
from imagefleet.dev import keda, processes  # noqa: E402
from imagefleet.dev.cluster import ControlPlane  # noqa: E402
from imagefleet.dev.prometheus import LocalPrometheus, Target  # noqa: E402
from imagefleet.cost import builtin_plan, call_seconds  # noqa: E402
from tests.gateway.process import gateway_process  # noqa: E402
from tests.keda.conftest import KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS, scaled_object_for  # noqa: E402
from tests.operator.harness import OperatorProcess, install_crd  # noqa: E402

NAME = "replay"
MODEL, GPU_CLASS, PRECISION, SIZE, STEPS = "sdxl", "a100-80gb", "fp16", 1024, 30
BODY = {"prompt": "a lighthouse at dusk", "response_format": "b64_json"}
POLICIES = ("imagefleet", "keda")
# The operator's, Prometheus's, the gateway's, the HPA's and KEDA's defaults, in trace time.
INTERVAL_SECONDS = 15.0
SCRAPE_SECONDS = 15.0
DOWN_WINDOW_SECONDS = 300.0
HOLD_TIMEOUT_SECONDS = 180.0
HPA_SYNC_SECONDS = 15.0  # kube-controller-manager's --horizontal-pod-autoscaler-sync-period
HPA_POLICY_PERIOD_SECONDS = 15.0  # the HPA's default scale-up (+100 % or +4 pods) and scale-down policies
KEDA_POLLING_SECONDS = 30.0  # the ScaledObject's pollingInterval
# What the operator's policy assumes a new replica takes to serve (policy.Targets, wall time).
OPERATOR_STARTUP_SECONDS = Targets(1, 1, 1.0, 1.0).startup_seconds
GATEWAY_POLL_SECONDS = 0.25  # the gateway's default --poll-interval: it learns a new pod's rate within one
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

    def live(self, seconds: float) -> float:
        """Trace seconds as wall seconds."""
        return seconds / self.speedup

    def live_whole(self, seconds: float) -> int:
        """Trace seconds as whole wall seconds (the Kubernetes fields that take integers), at least 1."""
        return max(1, round(seconds / self.speedup))

    @property
    def rate_window_seconds(self) -> float:
        return WINDOW_INTERVALS * max(INTERVAL_SECONDS, SCRAPE_SECONDS)

    def fleet(self, startup_seconds: float, interval_seconds: float = INTERVAL_SECONDS,
              query_step_seconds: float = 0.0) -> Fleet:
        plan = builtin_plan(model=MODEL, gpu_class=GPU_CLASS, precision=PRECISION)
        base = call_seconds(plan, width=SIZE, height=SIZE, steps=STEPS, images=1)
        c = plan.class_cost.batch_cost
        return Fleet(
            batch_seconds=base * (1 - c),
            image_seconds=base * c,
            max_batch_size=self.max_batch_size,
            startup_seconds=startup_seconds,
            interval_seconds=interval_seconds,
            scrape_interval_seconds=SCRAPE_SECONDS,
            latency_window_seconds=self.rate_window_seconds,
            hold_timeout_seconds=HOLD_TIMEOUT_SECONDS,
            query_step_seconds=query_step_seconds,
        )

    def targets(self) -> Targets:
        return Targets(
            min_replicas=1,
            max_replicas=self.max_replicas,
            target_queue_depth=4.0,
            target_p95_seconds=self.target_p95_seconds,
            scale_down_stabilization_seconds=self.live_whole(DOWN_WINDOW_SECONDS) * self.speedup,
            latency_window_seconds=self.rate_window_seconds,
            startup_seconds=OPERATOR_STARTUP_SECONDS * self.speedup,
        )

    def resource(self, policy: str) -> dict[str, Any]:
        target = self.live(self.target_p95_seconds)
        autoscaling: dict[str, Any] = {"enabled": False, "targetP95Seconds": target}  # the gateway's deadline
        spec: dict[str, Any] = {"replicas": 1}
        if policy == "imagefleet":
            autoscaling = {
                "enabled": True, "minReplicas": 1, "maxReplicas": self.max_replicas, "targetQueueDepth": 4,
                "targetP95Seconds": target, "scaleUpStabilizationSeconds": 0,
                "scaleDownStabilizationSeconds": self.live_whole(DOWN_WINDOW_SECONDS),
            }
            spec = {}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageModelDeployment",
            "metadata": {"name": NAME},
            "spec": {
                **spec,
                "model": {"name": MODEL},
                "tier": "standard",
                "precision": PRECISION,
                "gpuClass": GPU_CLASS,
                "autoscaling": autoscaling,
                "batching": {"maxBatchSize": self.max_batch_size, "queueSize": self.queue_size},
                "generation": {"defaultSteps": STEPS, "defaultWidth": SIZE, "defaultHeight": SIZE},
            },
        }

    def scaled_object(self, namespace: str, prometheus_url: str) -> dict[str, Any]:
        """docs/keda.md's ScaledObject for the resource, with the resource's bounds and window, and
        KEDA's and the HPA's own periods divided by the speed-up (printed by `compression`)."""
        scaled = scaled_object_for(
            namespace, NAME, prometheus_url, down_window=self.live_whole(DOWN_WINDOW_SECONDS),
            rate_window=f"{round(self.live(self.rate_window_seconds) * 1000)}ms",
        )
        spec = scaled["spec"]
        spec["minReplicaCount"], spec["maxReplicaCount"] = 1, self.max_replicas
        spec["pollingInterval"] = self.live_whole(KEDA_POLLING_SECONDS)
        period = self.live_whole(HPA_POLICY_PERIOD_SECONDS)
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        behavior["scaleUp"] = {  # the HPA's default scale-up behaviour, its period compressed
            "stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": period},
                         {"type": "Pods", "value": 4, "periodSeconds": period}],
        }
        behavior["scaleDown"]["policies"] = [{"type": "Percent", "value": 100, "periodSeconds": period}]
        return scaled

    def compression(self) -> str:
        return (
            f"x{self.speedup:g} for both policies: trace, emulated engine, p95 target "
            f"{self.live(self.target_p95_seconds):g} s, operator interval {self.live(INTERVAL_SECONDS):g} s, scrape "
            f"{self.live(SCRAPE_SECONDS):g} s, rate window {self.live(self.rate_window_seconds):g} s, scale-down window "
            f"{self.live_whole(DOWN_WINDOW_SECONDS)} s, gateway hold timeout {self.live(HOLD_TIMEOUT_SECONDS):g} s, "
            f"HPA sync period {self.live(HPA_SYNC_SECONDS):g} s, HPA scale-up/down policy period "
            f"{self.live_whole(HPA_POLICY_PERIOD_SECONDS)} s, KEDA pollingInterval "
            f"{self.live_whole(KEDA_POLLING_SECONDS)} s (wall); not compressed: pod process start, readiness probe"
        )


@dataclass(frozen=True)
class Figures:
    replica_minutes: float
    slo_violation_minutes: int
    scale_changes: int
    requests: int
    rejected: int
    first_scale_up: float | None  # trace seconds from the load step to the first scale-up after it


def figures(latencies: Sequence[tuple[float, float]], replica_seconds: float, target: float, scale_changes: int,
            rejected: int, first_scale_up: float | None) -> Figures:
    """From (arrival, latency) pairs in trace time; a refused request's latency is math.inf."""
    by_minute: dict[int, list[float]] = {}
    for arrival, latency in latencies:
        by_minute.setdefault(int(arrival // 60), []).append(latency)
    return Figures(replica_seconds / 60, slo_violation_minutes(by_minute, target), scale_changes, len(latencies),
                   rejected, first_scale_up)


def load_step(trace: Sequence[tuple[float, float]]) -> float:
    """When the trace's rate rises most from one row to the next (trace seconds); its start is a
    rise from idle (the live fleet idles before it)."""
    rises = [(trace[0][1], trace[0][0])] + [(after[1] - before[1], after[0]) for before, after in zip(trace, trace[1:])]
    return max(rises)[1]


def first_after(times: Sequence[float], since: float) -> float | None:
    later = [at - since for at in times if at >= since]
    return min(later) if later else None


@dataclass
class Watch:
    """The resource, polled: GPU-holding pods over time, the Deployment's replicas, when each pod
    was asked for and when it became a ready endpoint of the Service, and (KEDA) the HPA's state."""

    seen: dict[str, float] = field(default_factory=dict)  # pod uid -> first seen (monotonic)
    names: dict[str, str] = field(default_factory=dict)  # pod uid -> name
    ready: dict[str, float] = field(default_factory=dict)  # pod uid -> first seen Ready
    serving: dict[str, float] = field(default_factory=dict)  # pod uid -> its IP first listed as a ready endpoint
    counts: list[tuple[float, int]] = field(default_factory=list)
    replicas: list[tuple[float, int]] = field(default_factory=list)  # the Deployment's spec.replicas
    hpa: list[tuple[float, str]] = field(default_factory=list)  # (time, ScalingActive and desired) on change
    # (time, desired, the triggers' values as the HPA last read them), each new reading.
    readings: list[tuple[float, int, str]] = field(default_factory=list)

    def poll(self, api: client.ApiClient, namespace: str, with_hpa: bool) -> None:
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
            self.names.setdefault(uid, pod.metadata.name)
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                self.ready.setdefault(uid, now)
                # By pod, not address: a new pod may get a deleted pod's address.
                if pod.status.pod_ip in addresses:
                    self.serving.setdefault(uid, now)
        if with_hpa:
            hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{NAME}", namespace)
            active = next((c for c in hpa.status.conditions or [] if c.type == "ScalingActive"), None)
            state = (f"ScalingActive={active.status if active else '?'} ({active.reason if active else ''}), "
                     f"desired {hpa.status.desired_replicas}")
            if not self.hpa or self.hpa[-1][1] != state:
                self.hpa.append((now, state))
            values = ", ".join(  # per trigger, in the ScaledObject's order: the total / status.replicas
                str(m.external.current.average_value) for m in hpa.status.current_metrics or [] if m.external is not None
            )
            if not self.readings or self.readings[-1][1:] != (hpa.status.desired_replicas, values):
                self.readings.append((now, hpa.status.desired_replicas, values))

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

    def increases(self) -> list[float]:
        return [at for (at, after), (_, before) in zip(self.replicas[1:], self.replicas) if after > before]

    def sync_period(self, start: float, end: float) -> float | None:
        """The HPA's mean interval between status writes with new readings in [start, end] (wall s),
        leaving out gaps over twice the median (syncs that read the same values)."""
        times = [at for at, _, _ in self.readings if start <= at <= end]
        gaps = [after - before for before, after in zip(times, times[1:])]
        if not gaps:
            return None
        usual = [gap for gap in gaps if gap <= 2 * statistics.median(gaps)]
        return statistics.fmean(usual)

    def pod_startups(self) -> list[float]:
        """Per pod: first seen to Ready (the node agent's process start, model load and probes)."""
        return [self.ready[uid] - self.seen[uid] for uid in self.ready]

    def startups(self, since: float) -> list[float]:
        """Per pod of a scale-up after `since`: from the Deployment's replicas increase that asked
        for it to its address as a ready endpoint, plus half the gateway's load-poll period (the mean
        wait until the gateway knows its rate): the simulator's "serves startup_seconds after it is
        asked for"."""
        increases = self.increases()
        startups = []
        for uid, seen in self.seen.items():
            asked = [at for at in increases if since <= at <= seen]
            if asked and uid in self.serving:
                startups.append(self.serving[uid] - asked[-1] + GATEWAY_POLL_SECONDS / 2)
        return startups


class Picker(Protocol):
    """Where to send the next request (the gateway, or one fixed pod)."""

    def pick(self) -> str: ...  # a base URL; LookupError when there is none

    def release(self, url: str) -> None: ...


@dataclass(frozen=True)
class Fixed:
    """Every request to one base URL (the gateway)."""

    url: str

    def pick(self) -> str:
        return self.url

    def release(self, url: str) -> None:
        pass


@dataclass
class Replayed:
    """In trace seconds: (arrival, latency) per request, the latency from the scheduled arrival
    (math.inf unless a 200); how many were refused (429, or 503 after the hold timeout); how
    late each request left the client (its own share of the latency: the client's event loop on
    a busy machine)."""

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
            replayed.refused += status in (429, 503)
            results.append((arrival, math.inf))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as http:
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


@dataclass(frozen=True)
class Live:
    """What one live run needs besides the trace."""

    api: client.ApiClient
    plane: ControlPlane
    prometheus_url: str
    gateway_url: str
    settings: Settings
    keda_metrics_down: float  # trace seconds without KEDA's metrics server from the load step (0: none)


async def wait_ready(live: Live, namespace: str, watch: Watch, policy: str) -> None:
    """The first replica serving through the gateway, and (KEDA) the HPA reading its metrics."""
    custom = client.CustomObjectsApi(live.api)
    deadline = time.monotonic() + 180
    async with httpx.AsyncClient(timeout=60) as http:
        while True:
            try:
                await asyncio.to_thread(watch.poll, live.api, namespace, False)
                if watch.serving:
                    response = await http.post(f"{live.gateway_url}/v1/images/generations", json={**BODY, "model": NAME})
                    if response.status_code == 200:
                        break
            except client.ApiException:  # no Deployment yet
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the first replica did not answer through the gateway within 180 s")
            await asyncio.sleep(POLL_SECONDS)
    if policy == "keda":
        scaled = live.settings.scaled_object(namespace, live.prometheus_url)
        custom.create_namespaced_custom_object(KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, scaled)
        hpas = client.AutoscalingV2Api(live.api)

        def reading() -> bool:
            try:
                hpa = hpas.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{NAME}", namespace)
            except client.ApiException:
                return False
            active = next((c for c in hpa.status.conditions or [] if c.type == "ScalingActive"), None)
            return active is not None and active.status == "True" and len(hpa.status.current_metrics or []) == 3

        while not await asyncio.to_thread(reading):
            if time.monotonic() > deadline + 120:
                raise SystemExit("the HPA did not read KEDA's three metrics within 120 s")
            await asyncio.sleep(POLL_SECONDS)
    # A full rate window of idle samples.
    await asyncio.sleep(live.settings.live(live.settings.rate_window_seconds))


async def keda_outage(live: Live, at: float) -> None:
    """Stop KEDA's metrics server `at` wall seconds from now, for `keda_metrics_down` trace seconds."""
    await asyncio.sleep(at)
    print(f"  fault: KEDA's metrics server stopped for {live.keda_metrics_down:g} s of trace time", flush=True)
    await asyncio.to_thread(processes.stop, live.plane.pids[keda.METRICS_SERVER])
    await asyncio.sleep(live.settings.live(live.keda_metrics_down))
    await asyncio.to_thread(live.plane.restart, keda.METRICS_SERVER)
    print("  fault: KEDA's metrics server started again", flush=True)


async def run_live(live: Live, namespace: str, policy: str, trace: list[tuple[float, float]],
                   arrivals: list[float]) -> tuple[Figures, list[float], list[float], float | None]:
    """The live figures; the start-ups of the run's scale-ups (asked to serving) and of every pod
    (seen to Ready), in wall seconds; (KEDA) the HPA's sync period as it ran, in trace seconds."""
    settings = live.settings
    custom = client.CustomObjectsApi(live.api)
    watch = Watch()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, settings.resource(policy))
    await wait_ready(live, namespace, watch, policy)
    start, start_unix = time.monotonic(), time.time()
    end = start + settings.live(trace[-1][0])
    step = load_step(trace)
    sending = asyncio.create_task(replay(Fixed(live.gateway_url), arrivals, settings.speedup, model=NAME))
    fault = (asyncio.create_task(keda_outage(live, settings.live(step))) if live.keda_metrics_down else None)
    loads = []
    while not sending.done():
        await asyncio.to_thread(watch.poll, live.api, namespace, policy == "keda")
        loads.append(os.getloadavg()[0])
        await asyncio.sleep(POLL_SECONDS)
    replayed = await sending
    if fault is not None:
        await fault
    lags = sorted(lag for _, lag in replayed.send_lags)
    print(f"  client send lag (trace s): p50 {statistics.median(lags):.2f}, p95 {lags[int(0.95 * len(lags))]:.2f}, "
          f"max {lags[-1]:.2f}; 1-minute load average {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} cores",
          flush=True)
    print(f"  answers by HTTP status (-1: none): {dict(sorted(replayed.statuses.items()))}", flush=True)
    print("  Deployment replicas (trace s: replicas): " + ", ".join(
        f"{(at - start) * settings.speedup:.0f}: {count}" for (at, count), (_, before)
        in zip(watch.replicas[1:], watch.replicas) if count != before and start <= at <= end), flush=True)
    for at, state in watch.hpa:
        print(f"  HPA at {(at - start) * settings.speedup:.0f} s (trace): {state}", flush=True)
    print_violations(replayed, settings.target_p95_seconds)
    if policy == "keda":
        print_live_timeline(live, namespace, watch, start, start_unix)
    replica_seconds = watch.pod_seconds(start, end) * settings.speedup
    if policy == "keda":
        custom.delete_namespaced_custom_object(KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, NAME)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    increases = [(at - start) * settings.speedup for at in watch.increases() if start <= at <= end]
    result = figures(replayed.latencies, replica_seconds, settings.target_p95_seconds,
                     watch.scale_changes(start, end), replayed.refused, first_after(increases, step))
    period = watch.sync_period(start, end) if policy == "keda" else None
    return result, watch.startups(start), watch.pod_startups(), None if period is None else period * settings.speedup


def first_samples(prometheus_url: str, query: str, since_unix: float, nonzero: bool) -> dict[str, float]:
    """Per pod, the unix time of the first raw sample of `query` (a range selector) after
    `since_unix`, or of the first above 0."""
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query, "time": time.time()})
    response.raise_for_status()
    firsts: dict[str, float] = {}
    for series in response.json()["data"]["result"]:
        times = [float(at) for at, value in series["values"] if float(at) >= since_unix and
                 (float(value) > 0 or not nonzero)]
        if times:
            firsts[series["metric"].get("pod", "?")] = min(times)
    return firsts


def print_live_timeline(live: Live, namespace: str, watch: Watch, start: float, start_unix: float) -> None:
    """Per pod: first seen, first scraped, Ready, serving, first batch seconds in Prometheus; and the
    HPA's readings of KEDA's triggers before each raise (trace seconds from the replay's start)."""
    speedup = live.settings.speedup
    span = f"[{math.ceil(time.time() - start_unix) + 30}s]"
    selector = f'{{namespace="{namespace}"}}'
    scraped = first_samples(live.prometheus_url, f"up{selector}{span}", start_unix - 60, nonzero=True)
    busy = first_samples(live.prometheus_url, f"imagefleet_batch_duration_seconds_sum{selector}{span}",
                         start_unix - 60, nonzero=True)

    def mono(at: float | None) -> str:
        return "-" if at is None else f"{(at - start) * speedup:.0f}"

    def unix(at: float | None) -> str:
        return "-" if at is None else f"{(at - start_unix) * speedup:.0f}"

    print("  live timeline (trace s from the replay's start): pod: seen, first scraped, Ready, serving, "
          "first batch in Prometheus", flush=True)
    for uid, seen in sorted(watch.seen.items(), key=lambda item: item[1]):
        name = watch.names[uid]
        print(f"    {name}: {mono(seen)}, {unix(scraped.get(name))}, {mono(watch.ready.get(uid))}, "
              f"{mono(watch.serving.get(uid))}, {unix(busy.get(name))}", flush=True)
    print("  HPA readings (queue depth, busy replicas, gateway queue: each the total / status.replicas), "
          "the 60 s before each raise:", flush=True)
    for raised in watch.increases():
        before = [(at, desired, values) for at, desired, values in watch.readings
                  if raised - live.settings.live(60.0) <= at <= raised + 0.01]
        print(f"    raise at {mono(raised)}: " + "; ".join(
            f"{mono(at)}: desired {desired} ({values})" for at, desired, values in before), flush=True)


def print_model_timeline(decisions: list[tuple[Any, int]]) -> None:
    """The model's HPA, seed 0: what it read at each evaluation up to 45 s before each raise."""
    raises = [observation.time for observation, desired in decisions if desired > observation.replicas]
    print("  model timeline (seed 0, trace s): evaluation: replicas/ready, queue, busy, gateway queue -> desired",
          flush=True)
    for raised in raises:
        print(f"    raise at {raised:.0f}: " + "; ".join(
            f"{o.time:.0f}: {o.replicas}/{o.ready_replicas}, {o.queue_depth:g}, "
            f"{o.busy_replicas or 0:.2f}, {o.gateway_queued or 0:g} -> {desired}"
            for o, desired in decisions if raised - 45.0 <= o.time <= raised), flush=True)


def run_simulated(settings: Settings, policy: str, trace: list[tuple[float, float]], startup_seconds: float,
                  seeds: int, interval_seconds: float = INTERVAL_SECONDS) -> list[Result]:
    """Every seed's result; for KEDA, the model's HPA timeline on seed 0 (the live run's arrivals) is printed."""
    decisions: list[tuple[Any, int]] = []

    def autoscaler(seed: int) -> Any:
        if policy == "imagefleet":
            return PolicyAutoscaler(settings.targets())
        hpa = HpaAutoscaler(settings.targets(), KEDA_SCALED_OBJECT)

        def desired(observation: Any) -> int:
            decision = hpa.desired(observation)
            if seed == 0:
                decisions.append((observation, decision))
            return decision
        return desired

    # KEDA has Prometheus evaluate each query at the current whole second of wall time: SPEEDUP trace seconds.
    fleet = settings.fleet(startup_seconds, interval_seconds, settings.speedup if policy == "keda" else 0.0)
    results = [
        simulate(trace, autoscaler(seed), fleet, initial_replicas=1,
                 target_p95_seconds=settings.target_p95_seconds, seed=seed)
        for seed in range(seeds)
    ]
    if decisions:
        print_model_timeline(decisions)
    return results


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
                        help="names in imagefleet/autoscaling/traces/, run one at a time in this order (each "
                             "takes its length / SPEEDUP live: daily-wave's 24 hours are 96 minutes at x15)")
    parser.add_argument("--policy", choices=[*POLICIES, "both"], default="both",
                        help="who scales the resource live: imagefleet's autoscaler, KEDA + the HPA, or each in turn")
    parser.add_argument("--speedup", type=float, default=15.0, help="time compression of everything compressible")
    parser.add_argument("--rate-scale", type=float, default=0.25, help="the traces' rates are multiplied by this")
    parser.add_argument("--target-p95-seconds", type=float, default=20.0, help="trace seconds")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=5, help="simulator seeds (seed 0: the live run's arrivals)")
    parser.add_argument("--keda-metrics-down", type=float, default=0.0, metavar="SECONDS",
                        help="a fault run (--policy keda): KEDA's metrics server stopped at the load step for "
                             "SECONDS of trace time")
    args = parser.parse_args()
    policies = POLICIES if args.policy == "both" else (args.policy,)
    if args.keda_metrics_down and policies != ("keda",):
        parser.error("--keda-metrics-down needs --policy keda")
    settings = Settings(
        speedup=args.speedup, rate_scale=args.rate_scale, target_p95_seconds=args.target_p95_seconds,
        max_replicas=args.max_replicas, max_batch_size=args.max_batch_size, queue_size=args.queue_size,
    )
    traces = {name: scaled(read_trace(TRACES / f"{name}.csv"), settings.rate_scale) for name in args.traces}
    fleet = settings.fleet(0.0)
    peak = max(rate for trace in traces.values() for _, rate in trace)
    print(f"fleet (trace time): {MODEL} {SIZE}² {STEPS} steps on emulated {GPU_CLASS}: "
          f"{fleet.batch_seconds:.3f} s + {fleet.image_seconds:.3f} s x batch, batch <= {fleet.max_batch_size}, "
          f"continuous batching, behind the gateway's queue; p95 target {settings.target_p95_seconds:g} s, "
          f"1..{settings.max_replicas} replicas, queue target 4, busy target 0.8, scale-down window "
          f"{settings.targets().scale_down_stabilization_seconds:g} s, interval and scrape 15 s")
    print(f"compression {settings.compression()}")
    print(f"rates x{settings.rate_scale:g} (peak {peak:g}/s in trace time, {peak * settings.speedup:.1f} requests/s "
          f"live)", flush=True)

    # A fault run's live figures are not compared with the simulator's (which has no fault).
    fault = f"; FAULT: KEDA's metrics server down {args.keda_metrics_down:g} s" if args.keda_metrics_down else ""
    work = Path(tempfile.mkdtemp(prefix="imagefleet-simlive-"))
    plane = ControlPlane(work / "control-plane", emulation_speedup=settings.speedup,
                         hpa_sync_seconds=settings.live(HPA_SYNC_SECONDS))
    print("starting the control plane, node agent, Prometheus, operator and gateway ...", flush=True)
    plane.up(progress=lambda message: print(f"  {message}", flush=True))
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    scrape_ms = round(settings.live(SCRAPE_SECONDS) * 1000)
    prometheus = LocalPrometheus(work / "prometheus", scrape_interval=f"{scrape_ms}ms",
                                 pods_kubeconfig=plane.prometheus_kubeconfig)
    rows = []
    try:
        with ExitStack() as stack:
            if "keda" in policies:
                plane.add_keda(progress=lambda message: print(f"  {message}", flush=True))
            prometheus.start()
            stack.callback(prometheus.stop)
            install_crd(api)
            operator = OperatorProcess(plane.kubeconfig, None, work / "operator.log", {
                "IMAGEFLEET_PROMETHEUS_URL": prometheus.url,
                "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(settings.live(INTERVAL_SECONDS)),
            }).start()
            stack.callback(operator.stop)
            gateway = stack.enter_context(gateway_process(
                plane.kubeconfig, "", work / "gateway.log", "--hold-timeout", str(settings.live(HOLD_TIMEOUT_SECONDS))))
            prometheus.set_targets([Target(gateway.metrics_url.removeprefix("http://"))])
            live = Live(api, plane, prometheus.url, gateway.url, settings, args.keda_metrics_down)
            for name, trace in traces.items():
                arrivals = poisson_arrivals(trace, random.Random(0))
                for policy in policies:
                    namespace = f"replay-{name}-{policy}"
                    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
                    print(f"\n{name}, {policy}: {len(arrivals)} requests over {settings.live(trace[-1][0]):.0f} s "
                          f"live; load step at {load_step(trace):g} s ...", flush=True)
                    result, startups, pod_startups, sync = asyncio.run(
                        run_live(live, namespace, policy, trace, arrivals))
                    if not startups:
                        raise SystemExit(f"{name}: no scale-up, so no start-up time to give the simulator")
                    startup = statistics.median(startups)
                    print(f"  live pod start (seen to Ready, {len(pod_startups)} pods): {spread(pod_startups)}\n"
                          f"  live start-up (replicas raised to a ready endpoint + {GATEWAY_POLL_SECONDS / 2:g} s "
                          f"gateway poll, {len(startups)} pods): {spread(startups)} -> simulator "
                          f"{startup * settings.speedup:.0f} s", flush=True)
                    interval = INTERVAL_SECONDS
                    if sync is not None:  # the HPA re-queues itself a sync period after each sync ends
                        interval = sync
                        print(f"  live HPA sync period (between status writes with new readings): {sync:.1f} s "
                              f"-> simulator", flush=True)
                    simulated = run_simulated(settings, policy, trace, startup * settings.speedup, args.seeds,
                                              interval)
                    rows.append((name, policy, result, simulated))
                    print_rows(rows[-1:], fault)
    finally:
        api.close()
        plane.down()
    print(f"\nall runs (trace time; live: one run on seed 0's arrivals; simulated: mean ± sd over seeds{fault}):")
    print_rows(rows, fault)


def print_rows(rows: list[tuple[str, str, Figures, list[Result]]], fault: str) -> None:
    """The table; with a `fault`, the live row says so and is not compared with the simulator's."""
    print("| trace | policy | run | replica-minutes | SLO-violation minutes | refused (429/503) | scale changes "
          "| load step to first scale-up (s) | requests |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, policy, live, simulated in rows:
        step = load_step(scaled(read_trace(TRACES / f"{name}.csv"), 1.0))
        ups = [first_after(result.scale_up_times, step) for result in simulated]
        series = {
            figure: [float(getattr(result, figure)) for result in simulated]
            for figure in ("replica_minutes", "slo_violation_minutes", "rejected", "scale_changes")
        }
        first = simulated[0]
        seen_ups = [up for up in ups if up is not None]

        def up(value: float | None) -> str:
            return "none" if value is None else f"{value:.0f}"

        print(f"| {name} | {policy} | live (emulated{fault}) | {live.replica_minutes:.1f} | {live.slo_violation_minutes} | "
              f"{live.rejected} | {live.scale_changes} | {up(live.first_scale_up)} | {live.requests} |")
        print(f"| | | simulated, seed 0 | {first.replica_minutes:.1f} | {first.slo_violation_minutes} | "
              f"{first.rejected} | {first.scale_changes} | {up(ups[0])} | {first.requests} |")
        print(f"| | | simulated, {len(simulated)} seeds | "
              + " | ".join(show(series[figure], 1) for figure in series)
              + f" | {show(seen_ups, 0) if seen_ups else 'none'} | |")
        if fault:
            continue
        print(f"| | | simulated − live | {difference(live.replica_minutes, series['replica_minutes'])} | "
              f"{difference(live.slo_violation_minutes, series['slo_violation_minutes'])} | "
              f"{difference(live.rejected, series['rejected'])} | "
              f"{difference(live.scale_changes, series['scale_changes'])} | | |", flush=True)


if __name__ == "__main__":
    main()
