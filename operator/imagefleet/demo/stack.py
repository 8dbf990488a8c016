"""Everything the demo runs, brought up in order and torn down in reverse.

The control plane with simulated GPU nodes and the node agent that runs each runtime
pod as an emulated-engine runtime at its loopback pod IP (imagefleet.dev), the CRD, a
local Prometheus that discovers those pods through the API server, the operator as its
own process (`imagefleet run`), and the gateway (`imagefleet gateway`), the fleet's one
front door. The demo's
own PID and every process it starts are recorded in `pids.json`: a second demo
refuses to start while the first runs, and cleans up after one that was killed
before its teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imagefleet.crd.generate import build_crd, build_pool_crd
from imagefleet.dev import processes
from imagefleet.dev.cluster import ControlPlane
from imagefleet.dev.errors import DevError
from imagefleet.dev.fleet import Fleet, load_fleet
from imagefleet.dev.paths import cache_dir
from imagefleet.dev.prometheus import LocalPrometheus, Target

Progress = Callable[[str], None]

NAMESPACE = "imagefleet-demo"
# Enough simulated L4 cards for the bulk tier to scale out on (the default fleet has 2).
DEMO_L4_NODES = 6
# The demo evaluates autoscaling every few seconds so a burst shows within a minute.
AUTOSCALE_INTERVAL_SECONDS = 3


def demo_dir() -> Path:
    return cache_dir() / "demo"


def demo_fleet() -> Fleet:
    fleet = load_fleet()
    fleet.classes["l4-24gb"] = fleet.classes["l4-24gb"].model_copy(update={"nodes": DEMO_L4_NODES})
    return fleet


class Stack:
    """The demo's processes; `up` then `down` (also after a failed `up`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs = directory / "logs"
        self.plane = ControlPlane(directory / "cluster", fleet=demo_fleet())
        self.prometheus: LocalPrometheus | None = None
        self.operator: Popen[bytes] | None = None
        self.gateway: Popen[bytes] | None = None
        self.gateway_url = ""
        self.api: client.ApiClient | None = None
        self._pids_file = directory / "pids.json"

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def _prometheus_dir(self) -> Path:
        return self.directory / "prometheus"

    def up(self, progress: Progress) -> client.ApiClient:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stop_stale(progress)
        # A fresh start: an earlier run's series would leak into this run's p95.
        for leftover in (self.logs, self._prometheus_dir):
            shutil.rmtree(leftover, ignore_errors=True)
        progress("starting the local control plane with simulated GPU nodes")
        self.plane.up(progress)
        self.api = config.new_client_from_config(config_file=str(self.kubeconfig))
        progress("installing the ImageModelDeployment CRD")
        install_crd(self.api)
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": NAMESPACE}})
        progress("starting Prometheus")
        self.prometheus = LocalPrometheus(self._prometheus_dir, pods_kubeconfig=self.plane.prometheus_kubeconfig)
        self.prometheus.start()
        self.record(self.prometheus.pid)
        progress("starting the operator (imagefleet run)")
        self.operator = processes.start(
            [
                sys.executable, "-m", "imagefleet",
                "run", "--kubeconfig", str(self.kubeconfig),
            ],
            self.logs / "operator.log",
            env={
                "IMAGEFLEET_PROMETHEUS_URL": self.prometheus.url,
                "IMAGEFLEET_NAMESPACES": NAMESPACE,
                "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(AUTOSCALE_INTERVAL_SECONDS),
            },
        )
        self.record(self.operator.pid)
        port, metrics_port = processes.free_port(), processes.free_port()
        progress(f"starting the gateway (imagefleet gateway) on {processes.HOST}:{port}")
        self.gateway = processes.start(
            [
                sys.executable, "-m", "imagefleet", "gateway",
                "--host", processes.HOST, "--port", str(port), "--metrics-port", str(metrics_port),
                "--namespaces", NAMESPACE,
            ],
            self.logs / "gateway.log",
            env={"KUBECONFIG": str(self.kubeconfig)},
        )
        self.record(self.gateway.pid)
        self.gateway_url = f"http://{processes.HOST}:{port}"
        processes.wait_for(self._gateway_ready, 60, f"the gateway's /readyz (see {self.logs / 'gateway.log'})")
        # The autoscaler reads the demand waiting at the gateway from Prometheus (its metrics port).
        self.prometheus.set_targets([Target(f"{processes.HOST}:{metrics_port}")])
        return self.api

    def _gateway_ready(self) -> bool:
        assert self.gateway is not None
        if self.gateway.poll() is not None:
            raise DevError(f"the gateway exited: see {self.logs / 'gateway.log'}")
        with urllib.request.urlopen(f"{self.gateway_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    def operator_alive(self) -> bool:
        return self.operator is not None and self.operator.poll() is None

    def gateway_alive(self) -> bool:
        return self.gateway is not None and self.gateway.poll() is None

    def record(self, pid: int | None) -> None:
        """Remember a started process for a later demo's `stop_stale`."""
        if pid is None:
            return
        recorded = self._recorded()
        recorded["children"].append(pid)
        self._write(recorded)

    def down(self) -> None:
        if self.gateway is not None:
            processes.stop(self.gateway.pid)
            self.gateway.wait()
        if self.operator is not None:
            processes.stop(self.operator.pid)
            self.operator.wait()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.api is not None:
            self.api.close()
        self.plane.down()
        self._pids_file.unlink(missing_ok=True)

    def stop_stale(self, progress: Progress) -> None:
        """Refuse while another demo runs; stop what a killed one left running."""
        recorded = self._recorded()
        owner = recorded["demo"]
        if owner and owner != os.getpid() and processes.alive(owner):
            raise DevError(f"another imagefleet demo is running (PID {owner}): stop it with Ctrl-C first")
        stale = [pid for pid in recorded["children"] if processes.alive(pid)]
        if stale:
            progress(f"stopping {len(stale)} processes an earlier demo left running")
        for pid in stale:
            processes.stop(pid)
        self._write({"demo": os.getpid(), "children": []})

    def _recorded(self) -> dict[str, Any]:
        try:
            recorded = json.loads(self._pids_file.read_text())
            return {"demo": int(recorded["demo"]), "children": [int(pid) for pid in recorded["children"]]}
        except (OSError, ValueError, TypeError, KeyError):
            return {"demo": 0, "children": []}

    def _write(self, recorded: dict[str, Any]) -> None:
        self._pids_file.write_text(json.dumps(recorded))


def install_crd(api: client.ApiClient) -> None:
    """Create the CRDs (ImageModelDeployment, ImageModelPool; or replace older ones) and wait until served."""
    extensions = client.ApiextensionsV1Api(api)
    for crd in (build_crd(), build_pool_crd()):
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
            current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)

        def established(name: str = crd["metadata"]["name"]) -> bool:
            found = extensions.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in found.status.conditions or [])

        processes.wait_for(established, 30, f"the {crd['spec']['names']['kind']} CRD to be established")
