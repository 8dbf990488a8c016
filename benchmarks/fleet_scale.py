"""The operator at fleet scale: N ImageModelDeployments on 1,000 KWOK GPU nodes, half autoscaled.

    python benchmarks/fleet_scale.py [--count 200] [--nodes 1000] [--interval 15]

Starts its own control plane (KWOK marks the pods Ready: no runtime runs, `node_agent=False`),
a local Prometheus, ONE synthetic exporter process (benchmarks/synthetic_exporter.py) that
publishes every resource's queue-depth series, and the operator (`imagefleet run`, one
namespace). Then:

1. creates COUNT resources (model tiny, fp16, one replica, round-robin over the five GPU
   classes; every second one autoscaled: 1..4 replicas at 4 waiting requests per replica)
   and waits until all are Ready;
2. after two intervals, measures a steady window (no change anywhere);
3. in each of WAVES waves, at a random moment of the interval, raises the synthetic queue of
   another tenth of the resources (all autoscaled) from 0 to 12 at once, and times each one
   from that change to its Deployment asking for 3 replicas.

It prints the time to all Ready, reconcile latency (create -> first Deployment write),
the operator's API writes per resource (audit log, by user agent) and the GETs of all
clients (API server metrics, an upper bound of the operator's), the same per minute in
the steady window, Prometheus's instant queries per interval (its own
prometheus_http_requests_total), the decision latency, the operator's RSS and CPU, and
the CPU time of every other process, to name the bottleneck. Runtime metrics are
SYNTHETIC, and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.operator_scale import (  # noqa: E402
    ReadyWatcher,
    _cpu_seconds,
    _epoch,
    _gets,
    _imd_ready,
    _peak_rss_mib,
    _percentile,
)
from imagefleet import GROUP, PLURAL, VERSION, heap  # noqa: E402
from imagefleet.autoscaling.loop import ROUND_LINE  # noqa: E402
from imagefleet.config import OperatorSettings  # noqa: E402
from imagefleet.dev import processes  # noqa: E402
from imagefleet.dev.cluster import ControlPlane  # noqa: E402
from imagefleet.dev.fleet import Fleet, load_fleet  # noqa: E402
from imagefleet.dev.prometheus import LocalPrometheus, Target  # noqa: E402
from tests.operator.harness import OPERATOR_USER_AGENTS, OperatorProcess, install_crd  # noqa: E402

GPU_CLASSES = ("t4-16gb", "l4-24gb", "a100-80gb", "h100-80gb", "h200-141gb")
GPUS_PER_NODE = 8
TARGET_QUEUE = 4
LOADED_QUEUE = 12  # 12 waiting at 4 per replica: 3 replicas
LOADED_REPLICAS = LOADED_QUEUE // TARGET_QUEUE
MAX_REPLICAS = 4
SCRAPE_INTERVAL = "5s"
# 1,000 kubelets renew a 40 s lease every 10 s: 100 writes a second that KWOK cannot keep up
# with on two shared cores, so nodes flap NotReady and their pods with them. Here the leases
# last 10 minutes and the node lifecycle controller waits 15 minutes (said in the output).
NODE_LEASE_SECONDS = 600
NODE_GRACE = "15m"


class FleetControlPlane(ControlPlane):
    """The local control plane with node heartbeats slowed down to what this machine can emulate."""

    def _kwok_argv(self, binaries: dict[str, Path], ports: dict[str, int]) -> list[str]:
        argv = super()._kwok_argv(binaries, ports)
        return [f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}" if arg.startswith("--node-lease-duration")
                else arg for arg in argv]

    def _controller_manager_argv(self, binaries: dict[str, Path], ports: dict[str, int], pki: Any) -> list[str]:
        return [*super()._controller_manager_argv(binaries, ports, pki), f"--node-monitor-grace-period={NODE_GRACE}"]


def fleet(nodes: int) -> Fleet:
    """`nodes` KWOK nodes spread over the GPU classes, 8 GPUs each."""
    base = load_fleet()
    classes: dict[str, Any] = {"cpu": {"nodes": 0}}
    for index, name in enumerate(GPU_CLASSES):
        spec = base.classes[name]
        classes[name] = {
            "nodes": nodes // len(GPU_CLASSES) + (1 if index < nodes % len(GPU_CLASSES) else 0),
            "gpusPerNode": GPUS_PER_NODE, "product": spec.product, "memoryMiB": spec.memory_mib,
        }
    return Fleet.model_validate({"nodeDefaults": base.node_defaults.model_dump(by_alias=True), "classes": classes})


def spec(index: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"name": "tiny"}, "precision": "fp16",
                            "gpuClass": GPU_CLASSES[index % len(GPU_CLASSES)]}
    if index % 2 == 0:
        body["autoscaling"] = {
            "enabled": True, "minReplicas": 1, "maxReplicas": MAX_REPLICAS, "targetQueueDepth": TARGET_QUEUE,
            "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": 600,
        }
    else:
        body["replicas"] = 1
    return body


class Deployments(threading.Thread):
    """Watches the namespace's Deployments: replicas asked and ready, and when spec.replicas changed."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api_client = api_client
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        self.replicas: dict[str, int] = {}
        self.ready: dict[str, int] = {}
        self.changed_at: dict[str, list[tuple[float, int]]] = {}
        self.lock = threading.Lock()
        self.version = 0  # bumped on every change of readiness

    def run(self) -> None:
        try:
            self._watch()
        except Exception as error:  # noqa: BLE001 - the API server going away at the end
            print(f"(the Deployment watch ended: {error!r})", flush=True)

    def _watch(self) -> None:
        resource_version = ""
        while True:
            query = [("watch", "true"), ("timeoutSeconds", "300"), ("allowWatchBookmarks", "true")]
            if resource_version:
                query.append(("resourceVersion", resource_version))
            serialized = self.api_client.param_serialize("GET", self.path, query_params=query,
                                                         auth_settings=["BearerToken"])
            response = self.api_client.call_api(*serialized, _request_timeout=(5, 330)).response
            buffer = ""
            for chunk in response.stream(decode_content=True):
                buffer += chunk.decode()
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        obj = event["object"]
                        resource_version = obj["metadata"].get("resourceVersion", resource_version)
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._seen(obj)

    def _seen(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        replicas = int(obj["spec"].get("replicas", 1))
        ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
        with self.lock:
            if self.replicas.get(name) != replicas:
                self.changed_at.setdefault(name, []).append((time.time(), replicas))
            self.replicas[name] = replicas
            if self.ready.get(name) != ready:
                self.ready[name] = ready
                self.version += 1


class Exporter:
    """The synthetic exporter process and its state file, kept in step with the ready pods."""

    def __init__(self, work: Path, namespace: str, names: list[str], deployments: Deployments) -> None:
        self.state = work / "synthetic-state.json"
        self.namespace = namespace
        self.queue = dict.fromkeys(names, 0.0)
        self.deployments = deployments
        self.port = processes.free_port()
        self._written = -1
        self._write()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "synthetic_exporter.py"), "--state", str(self.state),
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=(work / "exporter.log").open("wb"), start_new_session=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def load(self, names: list[str], queue: float) -> None:
        for name in names:
            self.queue[name] = queue
        self._write()

    def _follow(self) -> None:
        """Publish one series per ready pod (at least one), as Prometheus would scrape them."""
        while True:
            if self.deployments.version != self._written:
                self._write()
            time.sleep(1.0)

    def _write(self) -> None:
        with self.deployments.lock:
            version = self.deployments.version
            pods = {name: max(1, self.deployments.ready.get(name, 1)) for name in self.queue}
        state = {"namespace": self.namespace,
                 "resources": {name: {"pods": pods[name], "queue": self.queue[name]} for name in self.queue}}
        staging = self.state.with_suffix(".tmp")
        staging.write_text(json.dumps(state))
        staging.replace(self.state)
        self._written = version

    def stop(self) -> None:
        processes.stop(self.process.pid)
        self.process.wait()


def prometheus_queries(prometheus: LocalPrometheus) -> float:
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(r'^prometheus_http_requests_total\{([^}]*)\} (\S+)$', re.MULTILINE)
    return sum(float(value) for labels, value in pattern.findall(text) if 'handler="/api/v1/query"' in labels)


def operator_writes(audit_log: Path, namespace: str, start: float, end: float) -> Counter[str]:
    """The operator's writes in the namespace between two times, by verb, resource and field manager (audit log)."""
    writes: Counter[str] = Counter()
    for line in audit_log.read_text(errors="replace").splitlines():
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if ref.get("namespace") != namespace or not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS):
            continue
        if not start <= _epoch(event["requestReceivedTimestamp"]) <= end:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        manager = parse_qs(urlsplit(event.get("requestURI", "")).query).get("fieldManager")
        writes[f"{event['verb']} {resource}" + (f" ({manager[0]})" if manager else "")] += 1
    return writes


def first_deployment_writes(audit_log: Path, namespace: str) -> dict[str, float]:
    first: dict[str, float] = {}
    for line in audit_log.read_text(errors="replace").splitlines():
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if (ref.get("namespace") == namespace and ref.get("resource") == "deployments"
                and str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS)
                and ref.get("name") not in first):
            first[ref["name"]] = _epoch(event["requestReceivedTimestamp"])
    return first


def loaded_in_prometheus(prometheus: LocalPrometheus, namespace: str, names: list[str]) -> int:
    """How many of `names` Prometheus has at the loaded queue depth (its latest scrape)."""
    selector = f'namespace="{namespace}",imagefleet_io_name=~"{"|".join(names)}"'
    query = f"count(sum by (imagefleet_io_name) (imagefleet_queue_depth{{{selector}}}) >= {LOADED_QUEUE})"
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{urlencode({'query': query})}", timeout=10) as answer:
        result = json.loads(answer.read())["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] ")


def autoscaling_rounds(operator_log: Path) -> list[tuple[float, float, float, int]]:
    """The autoscaler's rounds from the operator's log: (start, seconds, Prometheus read seconds, Deployments scaled)."""
    rounds = []
    for line in operator_log.read_text(errors="replace").splitlines():
        at, found = LOG_TIME.match(line), ROUND_LINE.search(line)
        if at and found:
            end = datetime.strptime(at[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            seconds = float(found["seconds"])
            rounds.append((end - seconds, seconds, float(found["read"]), int(found["scaled"])))
    return rounds


def scaling_round_writes(audit_log: Path, namespace: str, rounds: list[tuple[float, float, float, int]]) -> list[str]:
    """For each round that scaled: when its scale patches went out, how many of the operator's other
    writes went before the last one and after it, and the write latency (audit log)."""
    writes: list[tuple[float, float, bool]] = []
    for line in audit_log.read_text(errors="replace").splitlines():
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if (ref.get("namespace") != namespace or event["verb"] in ("get", "list", "watch")
                or not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS)):
            continue
        patch = ref.get("resource") == "deployments" and "fieldManager=imagefleet-autoscaler" in event["requestURI"]
        writes.append((_epoch(event["requestReceivedTimestamp"]), _epoch(event["stageTimestamp"]), patch))
    lines = []
    for start, took, _, count in rounds:
        inside = [write for write in writes if start <= write[0] <= start + took]
        patches = sorted(at for at, _, patch in inside if patch)
        if not count or not patches:
            continue
        before = sum(1 for at, _, patch in inside if at <= patches[-1] and not patch)
        latency = [(done - at) * 1000 for at, done, _ in inside]
        lines.append(f"{took:5.1f} s round: {len(patches)} patches from +{patches[0] - start:.1f} to "
                     f"+{patches[-1] - start:.1f} s, {before} other writes before the last, "
                     f"{len(inside) - len(patches) - before} after; write latency p50 "
                     f"{_percentile(latency, 0.5):.0f} ms, p95 {_percentile(latency, 0.95):.0f} ms")
    return lines


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = _cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0, help="the autoscaler's interval, seconds")
    parser.add_argument("--resync", type=float, default=OperatorSettings.model_fields["resync_seconds"].default,
                        help="the operator's resync period, seconds (default: the operator's; the tests use 20)")
    parser.add_argument("--steady", type=float, default=60.0, help="the steady window, seconds")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--waves", type=int, default=5,
                        help="load waves, a tenth of the resources each (at most 5: half are autoscaled)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagefleet-fleet-scale-"))
    plane = FleetControlPlane(work / "control-plane", fleet=fleet(args.nodes), node_agent=False)
    print(f"starting the control plane with {args.nodes} KWOK GPU nodes ...", flush=True)
    started = time.time()
    kubeconfig = plane.up(progress=lambda message: print(f"  {message}", flush=True))
    print(f"  up in {time.time() - started:.0f} s", flush=True)
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    prometheus = LocalPrometheus(work / "prometheus", scrape_interval=SCRAPE_INTERVAL)
    operator: OperatorProcess | None = None
    exporter: Exporter | None = None
    try:
        install_crd(api_client)
        namespace = f"fleet-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
        names = [f"r{index:04d}" for index in range(args.count)]
        deployments = Deployments(api_client, namespace)
        deployments.start()
        exporter = Exporter(work, namespace, names, deployments)
        prometheus.set_targets([Target(f"127.0.0.1:{exporter.port}")])
        prometheus.start()
        operator = OperatorProcess(kubeconfig, namespace, work / "operator.log", {
            "IMAGEFLEET_PROMETHEUS_URL": prometheus.url,
            "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(args.interval),
            "IMAGEFLEET_RESYNC_SECONDS": str(args.resync),
        }).start()
        assert operator.process is not None
        others = {**plane.pids, "prometheus": prometheus.pid or 0, "synthetic-exporter": exporter.process.pid}
        watcher = ReadyWatcher(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", api_client,
                               args.count, _imd_ready)
        watcher.start()
        custom = client.CustomObjectsApi(api_client)
        created_at: dict[str, float] = {}

        def create(index: int) -> None:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
                    "metadata": {"name": names[index]}, "spec": spec(index)}
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            created_at[names[index]] = time.time()

        gets_before = _gets(api_client)
        cpu_before = _cpu_seconds(operator.process.pid)
        others_before = cpu_of(others)
        print(f"creating {args.count} ImageModelDeployments in {namespace} "
              f"({(args.count + 1) // 2} autoscaled) ...", flush=True)
        started = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(args.count)))
        applied = time.time() - started
        if not watcher.done.wait(args.timeout):
            print(f"TIMEOUT: only {len(watcher.ready_at)} of {args.count} Ready after {args.timeout:.0f}s")
        all_ready = max(watcher.ready_at.values()) - started if watcher.ready_at else float("nan")
        converge_cpu = _cpu_seconds(operator.process.pid) - cpu_before
        others_converge = {k: v - others_before.get(k, 0.0) for k, v in cpu_of(others).items()}
        time.sleep(2 * args.interval)  # the autoscaler's first rounds and the last status writes land
        converged = time.time()
        gets_converge = _gets(api_client) - gets_before
        writes_converge = operator_writes(plane.audit_log, namespace, 0, converged)

        print(f"steady window: {args.steady:.0f} s ...", flush=True)
        steady_start = time.time()
        queries_before = prometheus_queries(prometheus)
        gets_before = _gets(api_client)
        cpu_before = _cpu_seconds(operator.process.pid)
        others_before = cpu_of(others)
        time.sleep(args.steady)
        steady_end = time.time()
        minutes = (steady_end - steady_start) / 60
        steady_queries = prometheus_queries(prometheus) - queries_before
        steady_gets = _gets(api_client) - gets_before
        steady_cpu = _cpu_seconds(operator.process.pid) - cpu_before
        others_steady = {k: v - others_before.get(k, 0.0) for k, v in cpu_of(others).items()}
        steady_writes = operator_writes(plane.audit_log, namespace, steady_start, steady_end)
        steady_rss = rss_mib(operator.process.pid)

        tenth = max(1, args.count // 10)
        autoscaled = names[0::2]
        latency: dict[str, float] = {}
        loaded_count = 0
        # Per wave: when the load changed, how long until Prometheus had all of it, each resource's latency.
        waves: list[tuple[float, float | None, list[float]]] = []
        for wave in range(args.waves):
            loaded = autoscaled[wave * tenth:(wave + 1) * tenth]
            if not loaded:
                break
            time.sleep(random.uniform(0, args.interval))
            print(f"wave {wave + 1}: loading {len(loaded)} resources at once "
                  f"(synthetic queue 0 -> {LOADED_QUEUE}) ...", flush=True)
            loaded_count += len(loaded)
            load_at = time.time()
            exporter.load(loaded, LOADED_QUEUE)
            deadline = load_at + max(10 * args.interval, 120)
            scaled = 0
            in_prometheus: float | None = None
            while time.time() < deadline and scaled < len(loaded):
                if in_prometheus is None and loaded_in_prometheus(prometheus, namespace, loaded) == len(loaded):
                    in_prometheus = time.time() - load_at
                with deployments.lock:
                    for name in loaded:
                        for at, replicas in deployments.changed_at.get(name, []):
                            if at >= load_at and replicas >= LOADED_REPLICAS and name not in latency:
                                latency[name] = at - load_at
                scaled = sum(name in latency for name in loaded)
                time.sleep(0.25)
            waves.append((load_at, in_prometheus, [latency[name] for name in loaded if name in latency]))
        peak = _peak_rss_mib(operator.process.pid)

        first = first_deployment_writes(plane.audit_log, namespace)
        reconcile = [first[n] - created_at[n] for n in names if n in first and n in created_at]
        total_writes = sum(writes_converge.values())
        steady_total = sum(steady_writes.values())
        print()
        print("RESULTS (runtime metrics are SYNTHETIC: one exporter process publishes every resource's "
              "queue-depth and peak-memory series; KWOK marks pods Ready, no runtime runs)")
        print(f"resources:                        {args.count} ({(args.count + 1) // 2} autoscaled) on "
              f"{args.nodes} KWOK nodes, {GPUS_PER_NODE} GPUs each, {len(GPU_CLASSES)} classes")
        print(f"autoscaler interval:              {args.interval:g} s (Prometheus scrapes every {SCRAPE_INTERVAL})")
        print(f"operator resync:                  every {args.resync:g} s; allocator "
              f"{' '.join(f'{k}={v}' for k, v in heap.ALLOCATOR_ENV.items())} (the operator image's)")
        print(f"operator write limit:             {OperatorSettings().kube_write_qps:g} a second, burst "
              f"{OperatorSettings().kube_write_burst} (IMAGEFLEET_KUBE_WRITE_QPS and _BURST)")
        print(f"node heartbeats:                  {NODE_LEASE_SECONDS} s leases, {NODE_GRACE} grace (slowed: see "
              "NODE_LEASE_SECONDS)")
        print(f"all created after:                {applied:.1f} s")
        print(f"all Ready after:                  {all_ready:.1f} s ({len(watcher.ready_at)}/{args.count} Ready)")
        if reconcile:
            print(f"create -> first reconcile:        p50 {_percentile(reconcile, 0.5):.2f} s, "
                  f"p95 {_percentile(reconcile, 0.95):.2f} s")
        print(f"operator writes to converge:      {total_writes / args.count:.2f} per resource ({total_writes})")
        for key, value in sorted(writes_converge.items()):
            print(f"    {key:40s} {value:6d}  ({value / args.count:.2f} per resource)")
        print(f"GETs on imds/deployments/services to converge, all clients: {gets_converge / args.count:.2f} "
              "per resource (an upper bound of the operator's)")
        print(f"steady state, per minute:         {steady_total / minutes:.1f} operator writes, "
              f"{steady_gets / minutes:.1f} GETs (all clients)")
        for key, value in sorted(steady_writes.items()):
            print(f"    {key:40s} {value:6d}")
        print(f"Prometheus queries per interval:  {steady_queries / (args.steady / args.interval):.1f} "
              f"({steady_queries:.0f} in {args.steady:.0f} s)")
        if latency:
            values = list(latency.values())
            print(f"decision latency (load -> Deployment asks {LOADED_REPLICAS}): p50 {_percentile(values, 0.5):.1f} s, "
                  f"p95 {_percentile(values, 0.95):.1f} s = {_percentile(values, 0.95) / args.interval:.2f} intervals "
                  f"({len(latency)}/{loaded_count} scaled, {args.waves} waves)")
        else:
            print(f"decision latency: none of {loaded_count} scaled")
        rounds = autoscaling_rounds(work / "operator.log")
        if not rounds:
            print("autoscaling rounds: no round line in the operator log")
        else:
            seconds = [took for _, took, _, _ in rounds]
            reads = [read for _, _, read, _ in rounds]
            print(f"autoscaling rounds (operator log): {len(rounds)}, p50 {_percentile(seconds, 0.5):.1f} s, "
                  f"max {max(seconds):.1f} s (interval {args.interval:g} s); their Prometheus reads p50 "
                  f"{_percentile(reads, 0.5):.2f} s, max {max(reads):.2f} s")
        print("each wave, seconds after its load change (where the decision latency goes):")
        for number, (load_at, in_prometheus, values) in enumerate(waves, 1):
            after = [(start - load_at, took, read, count) for start, took, read, count in rounds
                     if start + took >= load_at]
            # The first round to begin after the change that scaled something (a round reads as it begins).
            acting = next(((start, took) for start, took, _, count in after if count and start >= 0), None)
            print(f"    wave {number}: in Prometheus {_seconds(in_prometheus)}; rounds began "
                  + ", ".join(f"{start:+.1f} ({took:.1f} s long, read {read:.1f} s, {count} scaled)"
                              for start, took, read, count in after[:3])
                  + (f"; acting round {acting[0]:+.1f}" if acting else "; no acting round")
                  + (f"; Deployments asked {LOADED_REPLICAS} from {min(values):.1f} to {max(values):.1f}"
                     if values else "; none scaled"))
        print("rounds that scaled, their writes (audit log):")
        for line in scaling_round_writes(plane.audit_log, namespace, rounds):
            print(f"    {line}")
        print(f"operator RSS:                     {steady_rss:.0f} MiB steady, {peak:.0f} MiB peak")
        print(f"operator CPU:                     {converge_cpu:.1f} s to converge, "
              f"{steady_cpu / minutes:.1f} s per minute steady ({steady_cpu / (steady_end - steady_start) * 100:.0f}% "
              "of one core)")
        print("other processes' CPU seconds (to converge / per minute steady):")
        for name in sorted(others_converge):
            print(f"    {name:28s} {others_converge[name]:7.1f} / {others_steady.get(name, 0.0) / minutes:6.1f}")
        print(f"machine load average (1 min):     {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        if operator is not None:
            operator.stop()
        if exporter is not None:
            exporter.stop()
        prometheus.stop()
        api_client.close()
        plane.down()


if __name__ == "__main__":
    main()
