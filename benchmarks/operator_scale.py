"""Apply N ImageModelDeployments at once to the local control plane and measure the operator.

    python benchmarks/operator_scale.py [--count 200] [--state-dir DIR]

Starts its own control plane (`imagefleet dev up` in a temporary state directory),
installs the CRD, runs `imagefleet run` as a subprocess watching one namespace,
creates COUNT resources (class cpu, model tiny, one replica) from 8 threads, and
prints:

- time from the first create until every resource is Ready=True;
- per resource, create -> first Deployment write (the first reconcile) and
  create -> Ready, p50/p95;
- operator API requests per resource: its writes from the API server's audit
  log (by user agent, verb and resource), plus every GET on imagemodeldeployments,
  deployments and services from the API server's metrics (all clients: an upper
  bound of the operator's reads; its LIST+WATCH streams are three for the run);
- the operator's peak RSS (VmHWM) and CPU time, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagefleet import GROUP, PLURAL, VERSION  # noqa: E402
from imagefleet.dev.cluster import ControlPlane  # noqa: E402
from tests.operator.harness import OPERATOR_USER_AGENTS, OperatorProcess, install_crd  # noqa: E402

SPEC = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "replicas": 1}
READ_RESOURCES = ("imagemodeldeployments", "deployments", "services")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _gets(api_client: client.ApiClient) -> int:
    """GET requests on READ_RESOURCES so far, from the API server's /metrics."""
    response = api_client.call_api(*api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    total = 0
    pattern = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
    for line in response.read().decode().splitlines():
        match = pattern.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") == "GET" and labels.get("resource") in READ_RESOURCES:
            total += int(float(match["value"]))
    return total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _imd_ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _deployment_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    return bool(status.get("readyReplicas")) and status.get("readyReplicas") == obj["spec"].get("replicas")


class ReadyWatcher(threading.Thread):
    """Records when each object of a list is first seen ready (by `ready(obj)`), from a watch."""

    def __init__(self, list_path: str, api_client: client.ApiClient, expected: int, ready: Any) -> None:
        super().__init__(daemon=True)
        self.api_client = api_client
        self.list_path = list_path
        self.expected = expected
        self.ready = ready
        self.ready_at: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        buffer = ""
        while not self.done.is_set():
            serialized = self.api_client.param_serialize(
                "GET", self.list_path, query_params=[("watch", "true"), ("timeoutSeconds", "60")],
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*serialized, _request_timeout=(5, 90)).response
            for chunk in response.stream(decode_content=True):
                buffer += chunk.decode()
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if not line.strip():
                        continue
                    obj = json.loads(line)["object"]
                    name = obj.get("metadata", {}).get("name")
                    if name and name not in self.ready_at and self.ready(obj):
                        self.ready_at[name] = time.time()
                        if len(self.ready_at) >= self.expected:
                            self.done.set()
                            response.release_conn()
                            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--state-dir", type=Path, help="control plane state (default: a temporary directory)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagefleet-bench-"))
    # Pods are not what this measures: KWOK marks them Ready without running a runtime each.
    plane = ControlPlane(args.state_dir or work / "control-plane", node_agent=False)
    print("starting the control plane ...", flush=True)
    kubeconfig = plane.up(progress=lambda message: print(f"  {message}", flush=True))
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    operator: OperatorProcess | None = None
    try:
        install_crd(api_client)
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
        operator = OperatorProcess(kubeconfig, namespace, work / "operator.log", {}).start()
        assert operator.process is not None
        names = [f"bench-{index:03d}" for index in range(args.count)]
        watcher = ReadyWatcher(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", api_client,
                               args.count, _imd_ready)
        pods = ReadyWatcher(f"/apis/apps/v1/namespaces/{namespace}/deployments", api_client, args.count,
                            _deployment_ready)
        watcher.start()
        pods.start()
        gets_before = _gets(api_client)
        cpu_before = _cpu_seconds(operator.process.pid)
        custom = client.CustomObjectsApi(api_client)
        created_at: dict[str, float] = {}

        def create(name: str) -> None:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
                    "metadata": {"name": name}, "spec": SPEC}
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            created_at[name] = time.time()

        print(f"creating {args.count} ImageModelDeployments in {namespace} ...", flush=True)
        started = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, names))
        applied = time.time() - started
        if not watcher.done.wait(args.timeout):
            print(f"TIMEOUT: only {len(watcher.ready_at)} of {args.count} Ready after {args.timeout:.0f}s")
        all_ready = max(watcher.ready_at.values()) - started if watcher.ready_at else float("nan")
        # Let the last status writes and Events land before counting.
        time.sleep(5)
        gets = _gets(api_client) - gets_before
        peak = _peak_rss_mib(operator.process.pid)
        cpu = _cpu_seconds(operator.process.pid) - cpu_before

        writes: Counter[str] = Counter()
        first_write: dict[str, float] = {}
        for line in plane.audit_log.read_text(errors="replace").splitlines():
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if ref.get("namespace") != namespace or not str(event.get("userAgent", "")).startswith(
                OPERATOR_USER_AGENTS
            ):
                continue
            resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            writes[f"{event['verb']} {resource}"] += 1
            if ref.get("resource") == "deployments" and ref.get("name") not in first_write:
                first_write[ref["name"]] = _epoch(event["requestReceivedTimestamp"])

        first = [first_write[n] - created_at[n] for n in names if n in first_write]
        ready = [watcher.ready_at[n] - created_at[n] for n in names if n in watcher.ready_at]
        pods_ready = [pods.ready_at[n] - created_at[n] for n in names if n in pods.ready_at]
        # The operator's own share: from the Deployment reporting its pods ready to Ready=True on the resource.
        to_status = [watcher.ready_at[n] - pods.ready_at[n] for n in names
                     if n in watcher.ready_at and n in pods.ready_at]
        total_writes = sum(writes.values())
        print()
        print(f"resources:                     {args.count} (class cpu, model tiny, 1 replica each)")
        print(f"all created after:             {applied:.1f} s")
        print(f"all Ready after:               {all_ready:.1f} s ({len(watcher.ready_at)}/{args.count} Ready)")
        if first:
            print(f"create -> first reconcile:     p50 {_percentile(first, 0.5):.2f} s, "
                  f"p95 {_percentile(first, 0.95):.2f} s")
        if pods_ready:
            print(f"create -> pods ready:          p50 {_percentile(pods_ready, 0.5):.2f} s, "
                  f"p95 {_percentile(pods_ready, 0.95):.2f} s (the Deployment's readyReplicas)")
        if ready:
            print(f"create -> Ready:               p50 {_percentile(ready, 0.5):.2f} s, "
                  f"p95 {_percentile(ready, 0.95):.2f} s, mean {statistics.mean(ready):.2f} s")
        if to_status:
            print(f"pods ready -> Ready=True:      p50 {_percentile(to_status, 0.5):.2f} s, "
                  f"p95 {_percentile(to_status, 0.95):.2f} s (the operator's status latency)")
        print(f"operator writes per resource:  {total_writes / args.count:.2f} ({total_writes} in all)")
        for key, value in sorted(writes.items()):
            print(f"    {key:40s} {value:5d}  ({value / args.count:.2f} per resource)")
        print(f"GETs on imds/deployments/services, all clients: {gets} ({gets / args.count:.2f} per resource)")
        print(f"operator requests per resource: <= {(total_writes + gets) / args.count:.2f} "
              "(plus 3 LIST+WATCH streams for the whole run)")
        print(f"operator peak RSS:             {peak:.0f} MiB")
        print(f"operator CPU time:             {cpu:.1f} s ({cpu / args.count * 1000:.0f} ms per resource)")
        print(f"machine load average (1 min):  {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        if operator is not None:
            operator.stop()
        api_client.close()
        plane.down()


if __name__ == "__main__":
    main()
