"""Grow the local emulated fleet to ~100 serving pods under load, and measure it.

    python benchmarks/local_fleet.py [--resources 20] [--max-replicas 5] [--seconds 240]

Starts its own control plane (node agent on: every runtime pod is a real runtime process
with the emulated engine at its loopback pod IP), a Prometheus that discovers the pods
through the API server, and the operator (`imagefleet run`, autoscaling every 5 s). It
applies RESOURCES ImageModelDeployments spread over the GPU classes (min 1, max
MAX_REPLICAS, scale on a queue of 2), then keeps CONCURRENCY requests in flight at each,
each to the ready endpoint of its Service with the fewest in flight, until every resource runs MAX_REPLICAS ready
pods (or SECONDS pass). It prints:

- the time from the load's start to all pods Ready, and per resource to its first
  scale-up (Deployment replicas > 1) and to all its replicas Ready, p50/p95/max;
- the autoscaler's decision latency: from the first Prometheus sample whose queue asked
  for more replicas to the Deployment's next replicas change, p50/p95/max (the queue
  series is read back from Prometheus after the run);
- Prometheus scrape health: runtime targets up / all runtime targets / runtime pods;
- CPU and memory of the node agent and of the runtime pods (RSS and PSS; CPU as a share
  of one core over the last 30 s), and the machine's load.

Every latency and throughput figure is from the emulated engine (published card timings),
never a GPU measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagefleet import GROUP, PLURAL, VERSION  # noqa: E402
from imagefleet.bench.endpoints import Endpoints  # noqa: E402
from imagefleet.dev.cluster import ControlPlane, agent_processes  # noqa: E402
from imagefleet.dev.fleet import Fleet, load_fleet  # noqa: E402
from imagefleet.dev.prometheus import LocalPrometheus  # noqa: E402
from tests.operator.harness import OperatorProcess, install_crd  # noqa: E402

NAMESPACE = "fleet"
INTERVAL_SECONDS = 5
# GPU class -> a model that fits it (kept small to load: seconds, not minutes).
MODELS = {"t4-16gb": "sd15", "l4-24gb": "sd15", "a100-80gb": "sdxl", "h100-80gb": "sdxl", "h200-141gb": "sdxl"}
NODES_PER_CLASS, GPUS_PER_NODE = 4, 8
BODY = {"prompt": "a lighthouse at dusk", "response_format": "b64_json"}


def benchmark_fleet() -> Fleet:
    """The default fleet with room for the benchmark: NODES_PER_CLASS x GPUS_PER_NODE per GPU class."""
    fleet = load_fleet()
    for name in MODELS:
        fleet.classes[name] = fleet.classes[name].model_copy(
            update={"nodes": NODES_PER_CLASS, "gpus_per_node": GPUS_PER_NODE}
        )
    return fleet


def resource(index: int, max_replicas: int) -> dict[str, Any]:
    gpu_class = list(MODELS)[index % len(MODELS)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageModelDeployment",
        "metadata": {"name": f"r{index:02d}-{gpu_class}"},
        "spec": {
            "model": {"name": MODELS[gpu_class]},
            "tier": "standard",
            "precision": "fp16",
            "gpuClass": gpu_class,
            "autoscaling": {
                "enabled": True, "minReplicas": 1, "maxReplicas": max_replicas, "targetQueueDepth": 2,
                "scaleUpStabilizationSeconds": 0,
            },
        },
    }


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.1f} s, p95 {p95:.1f} s, max {ordered[-1]:.1f} s"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:"):
            values[parts[0]] = int(parts[1])
    return values["Rss:"], values["Pss:"]


class Load:
    """CONCURRENCY closed-loop clients per resource, each over its Service's ready endpoints."""

    def __init__(self, api: client.ApiClient, names: list[str], concurrency: int) -> None:
        self.targets = {name: Endpoints(api, NAMESPACE, name) for name in names}
        self.concurrency = concurrency
        self.answered: dict[str, int] = {}  # HTTP status or transport error name -> count
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as http:
            await asyncio.gather(
                *(self._client(http, pick) for pick in self.targets.values() for _ in range(self.concurrency))
            )

    async def _client(self, http: httpx.AsyncClient, endpoints: Endpoints) -> None:
        while not self.stop.is_set():
            try:
                url = endpoints.pick()
            except LookupError:
                await asyncio.sleep(0.5)
                continue
            try:
                response = await http.post(f"{url}/v1/images/generations", json=BODY)
                outcome = str(response.status_code)
            except httpx.HTTPError as error:
                response, outcome = None, type(error).__name__
            finally:
                endpoints.release(url)
            self.answered[outcome] = self.answered.get(outcome, 0) + 1
            if response is not None and response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def decision_latencies(prometheus: str, names: list[str], replica_changes: dict[str, list[tuple[float, int]]],
                             start: float, end: float) -> list[float]:
    """Per replica change: seconds since the first queue sample (after the previous change)
    that asked for more replicas than the Deployment had (ceil(queue / 2) > replicas)."""
    latencies = []
    async with httpx.AsyncClient(base_url=prometheus, timeout=30) as http:
        for name in names:
            query = f'sum(imagefleet_queue_depth{{namespace="{NAMESPACE}",imagefleet_io_name="{name}"}})'
            answer = await http.get("/api/v1/query_range", params={"query": query, "start": start, "end": end, "step": 1})
            result = answer.json()["data"]["result"]
            series = [(float(t), float(v)) for t, v in result[0]["values"]] if result else []
            replicas, since = 1, start
            for at, count in replica_changes.get(name, []):
                if count <= replicas:
                    replicas, since = count, at
                    continue
                asked = [t for t, queue in series if since <= t <= at and -(-queue // 2) > replicas]
                if asked:
                    latencies.append(at - asked[0])
                replicas, since = count, at
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=20)
    parser.add_argument("--max-replicas", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per resource")
    parser.add_argument("--seconds", type=float, default=300, help="give up growing after this long")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagefleet-fleet-"))
    plane = ControlPlane(work / "control-plane", fleet=benchmark_fleet())
    print("starting the control plane, node agent, Prometheus and operator ...", flush=True)
    plane.up(progress=lambda message: print(f"  {message}", flush=True))
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    prometheus = LocalPrometheus(work / "prometheus", scrape_interval="1s", pods_kubeconfig=plane.prometheus_kubeconfig)
    operator = None
    try:
        prometheus.start()
        install_crd(api)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        operator = OperatorProcess(plane.kubeconfig, NAMESPACE, work / "operator.log", {
            "IMAGEFLEET_PROMETHEUS_URL": prometheus.url, "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        }).start()
        custom = client.CustomObjectsApi(api)
        bodies = [resource(i, args.max_replicas) for i in range(args.resources)]
        names = [body["metadata"]["name"] for body in bodies]
        for body in bodies:
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        asyncio.run(run(api, plane, prometheus, names, args))
    finally:
        if operator is not None:
            operator.stop()
        prometheus.stop()
        api.close()
        plane.down()


async def run(api: client.ApiClient, plane: ControlPlane, prometheus: LocalPrometheus, names: list[str],
              args: argparse.Namespace) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    target_pods = len(names) * args.max_replicas

    def ready_pods() -> dict[str, int]:
        counts = dict.fromkeys(names, 0)
        for pod in core.list_namespaced_pod(NAMESPACE).items:
            name = (pod.metadata.labels or {}).get("imagefleet.io/name")
            if name in counts and pod.metadata.deletion_timestamp is None and any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            ):
                counts[name] += 1
        return counts

    settle_start = time.time()
    while sum(ready_pods().values()) < len(names):
        if time.time() - settle_start > 300:
            raise SystemExit("the resources did not become ready within 300 s")
        await asyncio.sleep(1)
    print(f"{len(names)} resources with one ready pod each after {time.time() - settle_start:.0f} s", flush=True)

    load = Load(api, names, args.concurrency)
    loading = asyncio.create_task(load.run())
    start = time.time()
    first_scale: dict[str, float] = {}
    all_ready: dict[str, float] = {}
    replica_changes: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    agent_pid = plane.pids["node-agent"]
    cpu_marks: list[tuple[float, float, dict[int, float]]] = []
    fleet_ready_at = None
    while time.time() - start < args.seconds:
        now = time.time()
        for deployment in apps.list_namespaced_deployment(NAMESPACE).items:
            name, replicas = deployment.metadata.name, deployment.spec.replicas or 0
            changes = replica_changes.setdefault(name, [])
            if not changes or changes[-1][1] != replicas:
                changes.append((now, replicas))
            if replicas > 1:
                first_scale.setdefault(name, now - start)
        counts = ready_pods()
        for name, count in counts.items():
            if count >= args.max_replicas:
                all_ready.setdefault(name, now - start)
        pids = [pid for pids in agent_processes(plane.state_dir).values() for pid in pids]
        cpu_marks.append((now, _cpu_seconds(agent_pid), {pid: _cpu_seconds(pid) for pid in pids if _alive(pid)}))
        if sum(counts.values()) >= target_pods and fleet_ready_at is None:
            fleet_ready_at = now - start
            print(f"all {target_pods} pods Ready {fleet_ready_at:.0f} s after the load began; measuring 30 s more",
                  flush=True)
        if fleet_ready_at is not None and now - start >= fleet_ready_at + 30:
            break
        await asyncio.sleep(2)
    end = time.time()
    pods = {pid: uid for uid, pids in agent_processes(plane.state_dir).items() for pid in pids}
    memory = {pid: _memory_kib(pid) for pid in pods if _alive(pid)}
    agent_rss, agent_pss = _memory_kib(agent_pid)
    load.stop.set()
    await loading
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=60) as http:

        async def count(query: str) -> float:
            result = (await http.get("/api/v1/query", params={"query": query})).json()["data"]["result"]
            return float(result[0]["value"][1]) if result else 0.0

        up = await count('count(up{job="imagefleet-runtime"} == 1)')
        targets = await count('count(up{job="imagefleet-runtime"})')
    latencies = await decision_latencies(prometheus.url, names, replica_changes, start, end)

    window_start = next((mark for mark in cpu_marks if mark[0] >= end - 30), cpu_marks[0])
    last = cpu_marks[-1]
    span = last[0] - window_start[0] or 1.0
    agent_cpu = (last[1] - window_start[1]) / span
    pod_cpu = sum(last[2][pid] - window_start[2].get(pid, last[2][pid]) for pid in last[2]) / span
    rss = sum(r for r, _ in memory.values()) / 1024
    pss = sum(p for _, p in memory.values()) / 1024
    print()
    print(f"emulated fleet: {len(names)} resources over {len(MODELS)} GPU classes, max {args.max_replicas} replicas each, "
          f"{args.concurrency} requests in flight per resource")
    print(f"  all {target_pods} pods Ready after the load began: "
          f"{'%.0f s' % fleet_ready_at if fleet_ready_at is not None else f'not within {args.seconds:.0f} s'}")
    print(f"  per resource, load -> first scale-up: {_percentiles(list(first_scale.values()))}")
    print(f"  per resource, load -> all {args.max_replicas} replicas Ready: {_percentiles(list(all_ready.values()))}")
    print(f"  autoscaler decision latency (queue asks for more -> Deployment changes): {_percentiles(latencies)}"
          f" over {len(latencies)} scale-ups (interval {INTERVAL_SECONDS} s, scrape 1 s)")
    print(f"  Prometheus: {up:.0f} runtime targets up of {targets:.0f} discovered; {len(memory)} runtime pods running")
    print(f"  node agent: RSS {agent_rss / 1024:.0f} MiB, CPU {100 * agent_cpu:.0f}% of a core (last 30 s)")
    print(f"  {len(memory)} runtime pods: RSS {rss:.0f} MiB total ({rss / max(1, len(memory)):.0f} MiB each), "
          f"PSS {pss:.0f} MiB total; CPU {100 * pod_cpu:.0f}% of a core together (last 30 s, under load)")
    print(f"  agent + pods: PSS {(pss + agent_pss / 1024) / 1024:.2f} GiB (goal < 8 GiB); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  answers during the run, by HTTP status or transport error: {dict(sorted(load.answered.items()))}")


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


if __name__ == "__main__":
    main()
