"""A multi-model trace replayed through a live emulated pool behind the real gateway, and through the
pool simulator, side by side.

    python benchmarks/pool_live.py [--minutes 10] [--seed 0] [--rate 0.3] [--checkpoints 40] [--adapters 200]

Live: a control plane whose node agent runs every runtime pod as a real runtime process (emulated
engine: SDXL fp16 on an H100 80 GB's published timings, swaps priced from the catalog's bandwidths),
a Prometheus the operator reads, the operator (`imagefleet run`), and `imagefleet gateway`. It applies
an ImageModelPool of REPLICAS pods (fixed: autoscaling off, so the comparison is about residency and
routing, not sizing), with explicit GPU and host budgets, and one ImageModelDeployment per checkpoint
(a Hugging Face repo id of family sdxl; never downloaded: the engine is emulated) and per LoRA
adapter (that checkpoint plus `spec.model.adapter`). The trace is the pool replay's synthetic one
(`imagefleet.pool.trace.synthetic`: Poisson arrivals, Zipf popularity of checkpoints and adapters,
10 % of requests with a LoRA, 30-40 steps, 1-8 images), written as the replay's CSV and read back
with its reader. An open-loop client sends each request to the gateway at its arrival time, in real
time (nothing is time-compressed), naming its member.

Measured live: per request, the answer's status and the client's latency; from the pool pods'
/metrics before and after, residency hits and misses (counted per request by the pod), checkpoint
swaps by source (host RAM, disk) and adapter loads.

Simulated: `imagefleet.pool.replay.replay` on the same requests with the same pool (REPLICAS pods
serving from the start with the family's base checkpoint resident, as a pool pod loads it), the
same budgets, adapter slots (the runtime's default), p95 target and catalog pricing. Every figure
is the emulated engine's, never a GPU measurement. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagefleet import GROUP, PLURAL, POOL_KIND, POOL_PLURAL, VERSION  # noqa: E402
from imagefleet.autoscaling.simulation import nearest_rank_p95  # noqa: E402
from imagefleet.bench.endpoints import ready_endpoints  # noqa: E402
from imagefleet.builders.labels import RUNTIME_METRICS_PORT  # noqa: E402
from imagefleet.builders.pool import pool_child_name  # noqa: E402
from imagefleet.dev.cluster import ControlPlane  # noqa: E402
from imagefleet.dev.prometheus import LocalPrometheus  # noqa: E402
from imagefleet.metrics import (  # noqa: E402
    ADAPTER_LOADS_TOTAL,
    RESIDENCY_HITS_TOTAL,
    RESIDENCY_MISSES_TOTAL,
    SWAPS_TOTAL,
)
from imagefleet.pool.replay import ArmResult, Setup, replay  # noqa: E402
from imagefleet.pool.trace import (  # noqa: E402
    Request,
    Synthetic,
    adapter_checkpoints,
    checkpoint_name,
    read_requests,
    synthetic,
    write_requests,
)
from imagefleet_runtime.settings import Settings as RuntimeSettings  # noqa: E402
from tests.gateway.process import gateway_process  # noqa: E402
from tests.operator.harness import POOL_CRD_FILE, OperatorProcess, install_crd  # noqa: E402

FAMILY, PRECISION = "sdxl", "fp16"
REPO = "imagefleet-bench"  # the members' Hugging Face organisation (never read: the engine is emulated)
TARGET_P95_SECONDS = 30.0  # the standard tier's, the members' own
ADAPTER_SLOTS = RuntimeSettings.model_fields["adapter_slots"].default  # pool pods run with the runtime's default
PROMPT = "a lighthouse at dusk"
WITHIN = 0.20  # the goal: live and simulated hit rate and p95 within 20 %


@dataclass(frozen=True)
class Case:
    """One comparison: the pool, its members and the trace."""

    checkpoints: int = 40
    adapters: int = 200
    replicas: int = 4
    minutes: float = 10.0
    rate: float = 0.3  # requests per second
    seed: int = 0
    gpu_class: str = "h100-80gb"
    # The replay's (and simulate-pool's) budgets for SDXL on an H100 80 GB (10 UNets on the GPU, 13 in host
    # RAM), in the whole MiB the pool's spec takes.
    gpu_budget_mib: int = int(Setup(family=FAMILY, gpu_class="h100-80gb", precision=PRECISION).budget_mib())
    host_budget_mib: int = int(Setup().host_budget_mib)
    pool: str = "bench"

    def shape(self) -> Synthetic:
        return Synthetic(checkpoints=self.checkpoints, adapters=self.adapters, rate=self.rate,
                         duration_seconds=self.minutes * 60)

    def trace(self, path: Path) -> list[Request]:
        """The synthetic trace, written as the replay's CSV and read back with its reader."""
        write_requests(path, synthetic(self.seed, self.shape()))
        return read_requests(path)

    def setup(self) -> Setup:
        """The simulator's pool: the same pods, budgets, adapter slots, target and pricing."""
        return Setup(family=FAMILY, gpu_class=self.gpu_class, precision=PRECISION,
                     target_p95_seconds=TARGET_P95_SECONDS, gpu_budget_mib=self.gpu_budget_mib,
                     host_budget_mib=self.host_budget_mib, adapter_slots=ADAPTER_SLOTS, pool_replicas=self.replicas)

    def pool_body(self) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "metadata": {"name": self.pool},
                "spec": {"family": FAMILY, "gpuClass": self.gpu_class, "precision": PRECISION,
                         "replicas": self.replicas, "autoscaling": {"enabled": False},
                         "memory": {"gpuMiB": self.gpu_budget_mib, "hostMiB": self.host_budget_mib}}}

    def members(self) -> list[dict[str, Any]]:
        """One ImageModelDeployment per checkpoint and per adapter, named as the trace names them."""
        bases = adapter_checkpoints(self.seed, self.shape())
        checkpoints = [checkpoint_name(index) for index in range(self.checkpoints)]
        models = {name: {"name": f"{REPO}/{name}", "family": FAMILY} for name in checkpoints}
        models |= {adapter: {**models[base], "adapter": {"name": f"{REPO}/{adapter}"}}
                   for adapter, base in bases.items()}
        return [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
                 "spec": {"model": model, "gpuClass": self.gpu_class, "precision": PRECISION, "pool": self.pool}}
                for name, model in models.items()]


def member_of(request: Request) -> str:
    """The member a request names at the gateway: its adapter's, else its checkpoint's."""
    if len(request.adapters) > 1:
        raise ValueError(f"a request at {request.time:g} s has {len(request.adapters)} adapters; a member has one")
    return request.adapters[0] if request.adapters else request.model


@dataclass(frozen=True)
class Record:
    """One request as the client saw it (latency from its scheduled arrival; inf unless a 200)."""

    arrival: float
    member: str
    status: int  # HTTP status; -1: no answer
    latency: float
    send_lag: float  # how late it left the client


@dataclass(frozen=True)
class Counters:
    """A pool's residency counters, summed over its pods."""

    hits: float = 0.0
    misses: float = 0.0
    swaps: Mapping[str, float] | None = None  # checkpoint swaps by source (host, disk)
    adapter_loads: float = 0.0

    def __sub__(self, before: Counters) -> Counters:
        sources = set(self.swaps or {}) | set(before.swaps or {})
        return Counters(self.hits - before.hits, self.misses - before.misses,
                        {s: (self.swaps or {}).get(s, 0.0) - (before.swaps or {}).get(s, 0.0) for s in sources},
                        self.adapter_loads - before.adapter_loads)


def parse_counters(texts: Sequence[str]) -> Counters:
    """The residency counters of pods' /metrics expositions, summed."""
    hits = misses = loads = 0.0
    swaps: dict[str, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == RESIDENCY_HITS_TOTAL:
                    hits += sample.value
                elif sample.name == RESIDENCY_MISSES_TOTAL:
                    misses += sample.value
                elif sample.name == ADAPTER_LOADS_TOTAL:
                    loads += sample.value
                elif sample.name == SWAPS_TOTAL:
                    source = sample.labels["source"]
                    swaps[source] = swaps.get(source, 0.0) + sample.value
    return Counters(hits, misses, swaps, loads)


def checkpoint_loads(text: str) -> dict[str, float]:
    """Checkpoints moved onto one pod's GPU (from host RAM or disk), by checkpoint, from its /metrics."""
    loads: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SWAPS_TOTAL:
                name = sample.labels["checkpoint"]
                loads[name] = loads.get(name, 0.0) + sample.value
    return loads


async def pod_metrics(http: httpx.AsyncClient, pods: Sequence[str]) -> list[str]:
    """Each pod's /metrics, from its metrics port (`pods`: their generation base URLs)."""
    texts = []
    for url in pods:
        host = httpx.URL(url).host
        answer = await http.get(f"http://{host}:{RUNTIME_METRICS_PORT}/metrics")
        answer.raise_for_status()
        texts.append(answer.text)
    return texts


async def deploy(api: client.ApiClient, namespace: str, case: Case, timeout: float = 600) -> list[str]:
    """Apply the pool and its members; wait until its pods are ready endpoints and every member is Ready.
    The pods' base URLs."""
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, case.pool_body())
    members = case.members()
    for body in members:
        await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body)
    deadline = time.monotonic() + timeout
    while True:
        pods = await asyncio.to_thread(ready_endpoints, api, namespace, pool_child_name(case.pool))
        listed = await asyncio.to_thread(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        ready = sum(1 for item in listed["items"] if any(
            c["type"] == "Ready" and c["status"] == "True" for c in (item.get("status") or {}).get("conditions") or []))
        if len(pods) == case.replicas and ready == len(members):
            return pods
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout:g} s: {len(pods)}/{case.replicas} pool pods ready, "
                               f"{ready}/{len(members)} members Ready")
        await asyncio.sleep(1.0)


async def wait_routable(gateway_url: str, names: Sequence[str], timeout: float = 120) -> None:
    """Until the gateway lists every member as a model group."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            listed = {model["id"] for model in (await http.get(f"{gateway_url}/v1/models")).json()["data"]}
            missing = set(names) - listed
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway does not list {len(missing)} members, e.g. {sorted(missing)[:3]}")
            await asyncio.sleep(0.5)


async def send(gateway_url: str, requests: Sequence[Request]) -> list[Record]:
    """Each request to the gateway at its arrival time, never waiting for answers (open loop)."""
    records: list[Record] = []
    start = time.monotonic()

    async def one(http: httpx.AsyncClient, request: Request) -> None:
        lag = time.monotonic() - start - request.time
        body = {"model": member_of(request), "prompt": PROMPT, "n": request.images, "steps": request.steps}
        try:
            status = (await http.post(f"{gateway_url}/v1/images/generations", json=body)).status_code
        except httpx.HTTPError:
            status = -1
        latency = time.monotonic() - start - request.time if status == 200 else math.inf
        records.append(Record(request.time, body["model"], status, latency, lag))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as http:
        tasks = []
        for request in requests:
            delay = start + request.time - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, request)))
        await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r.arrival)


@dataclass(frozen=True)
class Live:
    records: list[Record]
    counters: Counters  # over the replay
    loads: list[dict[str, float]]  # per pod: checkpoints moved onto its GPU, by checkpoint (none before the replay)

    @property
    def spread(self) -> int:
        """Checkpoints moved onto the GPU of more than one pod."""
        pods: dict[str, int] = {}
        for loads in self.loads:
            for name, count in loads.items():
                pods[name] = pods.get(name, 0) + (count > 0)
        return sum(1 for count in pods.values() if count > 1)

    @property
    def served(self) -> list[Record]:
        return [r for r in self.records if r.status == 200]

    @property
    def hit_rate(self) -> float:
        counted = self.counters.hits + self.counters.misses
        return self.counters.hits / counted if counted else math.nan

    @property
    def p95_seconds(self) -> float:
        """Over the answered requests (a refused one has no latency to compare)."""
        return nearest_rank_p95([r.latency for r in self.served])

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
        return dict(sorted(counts.items()))


async def run_live(api: client.ApiClient, namespace: str, gateway_url: str, case: Case,
                   requests: Sequence[Request]) -> Live:
    """Deploy the case's pool and members in `namespace`, replay `requests` through the gateway, and read
    the pool pods' counters around the replay."""
    pods = await deploy(api, namespace, case)
    await wait_routable(gateway_url, [body["metadata"]["name"] for body in case.members()])
    async with httpx.AsyncClient(timeout=30) as http:
        before = await pod_metrics(http, pods)
        records = await send(gateway_url, requests)
        after = await pod_metrics(http, pods)
    if any(checkpoint_loads(text) for text in before):
        raise RuntimeError("a pool pod moved a checkpoint before the replay began")
    return Live(records, parse_counters(after) - parse_counters(before), [checkpoint_loads(text) for text in after])


def write_records(path: Path, records: Sequence[Record]) -> None:
    """The per-request records as CSV (latency `inf` for a request not answered 200)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("arrival", "member", "status", "latency", "send_lag"))
        for r in records:
            writer.writerow((f"{r.arrival:.3f}", r.member, r.status, f"{r.latency:.3f}", f"{r.send_lag:.3f}"))


def relative(live: float, simulated: float) -> float:
    """The simulated figure's difference from the live one, as a share of it."""
    return (simulated - live) / live if live else (0.0 if simulated == 0 else math.inf)


def comparison_rows(live: Live, simulated: ArmResult) -> list[tuple[str, str, str, str]]:
    """(figure, live, simulated, simulated - live) rows."""
    swaps = live.counters.swaps or {}
    live_swaps = sum(swaps.values())
    refused = sum(count for status, count in live.statuses().items() if status in (429, 503))
    return [
        ("requests answered 200", str(len(live.served)), str(simulated.requests), ""),
        ("refused (429/503)", str(refused), "0 (not modelled)", ""),
        ("hit rate", f"{live.hit_rate:.1%}", f"{simulated.hit_rate:.1%}", f"{relative(live.hit_rate, simulated.hit_rate):+.1%}"),
        ("latency p95 s", f"{live.p95_seconds:.2f}", f"{simulated.p95_seconds:.2f}",
         f"{relative(live.p95_seconds, simulated.p95_seconds):+.1%}"),
        ("checkpoint swaps", f"{live_swaps:.0f}", str(simulated.checkpoint_swaps),
         f"{relative(live_swaps, simulated.checkpoint_swaps):+.1%}"),
        ("  from host RAM", f"{swaps.get('host', 0.0):.0f}", str(simulated.host_swaps), ""),
        ("  from disk", f"{swaps.get('disk', 0.0):.0f}", str(simulated.checkpoint_swaps - simulated.host_swaps), ""),
        ("adapter loads", f"{live.counters.adapter_loads:.0f}", str(simulated.adapter_loads),
         f"{relative(live.counters.adapter_loads, simulated.adapter_loads):+.1%}"),
    ]


def within(live: Live, simulated: ArmResult) -> dict[str, bool]:
    """The goal: the simulator's hit rate and p95 within 20 % of the live ones."""
    return {"hit rate": abs(relative(live.hit_rate, simulated.hit_rate)) <= WITHIN,
            "latency p95": abs(relative(live.p95_seconds, simulated.p95_seconds)) <= WITHIN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Case()
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="the trace's length (real time)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the synthetic trace's seed")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="requests per second (Poisson)")
    parser.add_argument("--checkpoints", type=int, default=defaults.checkpoints)
    parser.add_argument("--adapters", type=int, default=defaults.adapters)
    parser.add_argument("--replicas", type=int, default=defaults.replicas, help="the pool's pods (fixed)")
    args = parser.parse_args()
    case = Case(checkpoints=args.checkpoints, adapters=args.adapters, replicas=args.replicas, minutes=args.minutes,
                rate=args.rate, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="imagefleet-poollive-"))
    requests = case.trace(work / "trace.csv")
    setup = case.setup()
    print(f"emulated pool: {FAMILY} {PRECISION} on {case.gpu_class}, {case.replicas} pods (autoscaling off), "
          f"GPU budget {case.gpu_budget_mib} MiB, host {case.host_budget_mib} MiB, {ADAPTER_SLOTS} adapter slots; "
          f"{case.checkpoints} checkpoints and {case.adapters} LoRA adapters as members; p95 target "
          f"{TARGET_P95_SECONDS:g} s")
    print(f"trace: seed {case.seed}, {len(requests)} requests over {case.minutes:g} min at {case.rate:g}/s, "
          f"{len({r.model for r in requests})} checkpoints and {len({a for r in requests for a in r.adapters})} "
          f"adapters drawn; {work / 'trace.csv'}; real time (no compression)", flush=True)
    plane = ControlPlane(work / "control-plane")
    print("starting the control plane, node agent, Prometheus, operator and gateway ...", flush=True)
    plane.up(progress=lambda message: print(f"  {message}", flush=True))
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    namespace = "pool-live"
    try:
        with ExitStack() as stack:
            prometheus = stack.enter_context(LocalPrometheus(work / "prometheus", scrape_interval="5s",
                                                             pods_kubeconfig=plane.prometheus_kubeconfig))
            install_crd(api)
            install_crd(api, POOL_CRD_FILE)
            client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
            operator = OperatorProcess(plane.kubeconfig, namespace, work / "operator.log",
                                       {"IMAGEFLEET_PROMETHEUS_URL": prometheus.url}).start()
            stack.callback(operator.stop)
            gateway = stack.enter_context(gateway_process(plane.kubeconfig, namespace, work / "gateway.log"))
            started = time.monotonic()
            live = asyncio.run(run_live(api, namespace, gateway.url, case, requests))
            print(f"live replay done ({time.monotonic() - started:.0f} s with the deployment)", flush=True)
            write_records(work / "records.csv", live.records)
    finally:
        api.close()
        plane.down()
    simulated = replay(requests, setup, pooled=True)
    lags = sorted(r.send_lag for r in live.records)
    print(f"\nper-request records: {work / 'records.csv'}")
    print(f"answers by HTTP status (-1: none): {live.statuses()}; client send lag p95 "
          f"{lags[int(0.95 * (len(lags) - 1))]:.2f} s, max {lags[-1]:.2f} s")
    print("live checkpoint loads per pod: " + "; ".join(
        f"{sum(loads.values()):.0f} (of {len(loads)} checkpoints)" for loads in live.loads)
        + f"; {live.spread} checkpoints loaded onto more than one pod")
    print("| figure | live (emulated) | simulated (emulated) | simulated − live |")
    print("| --- | ---: | ---: | ---: |")
    for row in comparison_rows(live, simulated):
        print("| " + " | ".join(row) + " |")
    print("hit rate: live, the pods' residency hits over hits + misses (per request); simulated, the requests "
          "that moved nothing. p95: live over the answered requests, from the client")
    for figure, ok in within(live, simulated).items():
        print(f"goal: {figure} within {WITHIN:.0%} of the simulator's: {'met' if ok else 'missed'}")


if __name__ == "__main__":
    main()
