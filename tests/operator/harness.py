"""Running the operator against the test control plane: the CRD, an operator process, API helpers.

Other suites reuse this through the fixtures in tests/operator/conftest.py
(`imd_crd`, `operator_factory`, `imagefleet_operator`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION, heap
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "imagemodeldeployment.yaml"
POOL_CRD_FILE = ROOT / "crds" / "imagemodelpool.yaml"
OPERATOR_USER_AGENTS = ("imagefleet-operator", "kopf/")


def install_crd(api_client: client.ApiClient, path: Path = CRD_FILE) -> None:
    """Apply a checked-in CRD (server-side) and wait until it is Established."""
    manifest = yaml.safe_load(path.read_text())
    extensions = client.ApiextensionsV1Api(api_client)
    name = manifest["metadata"]["name"]
    extensions.patch_custom_resource_definition(
        name, manifest, field_manager="imagefleet-tests", force=True, _content_type="application/apply-patch+yaml"
    )

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout=30, message=f"CRD {name} to be Established")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`imagefleet run` as a subprocess with its own log file and liveness endpoint."""

    def __init__(self, kubeconfig: Path, namespace: str | None, log_path: Path, env: Mapping[str, str]) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.liveness_port = free_port()
        scope = ["--namespace", self.namespace] if self.namespace else ["--all-namespaces"]
        argv = [
            sys.executable, "-m", "imagefleet", "run", *scope,
            "--kubeconfig", str(self.kubeconfig), "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        # The allocator settings of the operator image (imagefleet.heap), so memory is measured as it runs there.
        env = {**os.environ, **heap.ALLOCATOR_ENV, "IMAGEFLEET_RESYNC_SECONDS": "20", **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        wait_until(self._live, timeout=timeout, interval=0.2, message=f"the operator to start (log: {self.log_path})")
        return self

    def _live(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Imds:
    """ImageModelDeployments in one namespace, through the real API server."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def create(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
                "metadata": {"name": name}, "spec": dict(spec)}
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)  # type: ignore[no-any-return]

    def get(self, name: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)  # type: ignore[no-any-return]

    def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": dict(spec)},
            _content_type="application/merge-patch+json",
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for condition in self.get(name).get("status", {}).get("conditions", []):
            if condition["type"] == type_:
                return condition  # type: ignore[no-any-return]
        return None

    def is_ready(self, name: str) -> bool:
        condition = self.condition(name, "Ready")
        return condition is not None and condition["status"] == "True"

    def wait_ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        wait_until(lambda: self.is_ready(name), timeout=timeout, message=f"{self.namespace}/{name} Ready=True")
        return self.get(name)


def operator_writes(audit_log: Path, since: float, namespace: str) -> list[dict[str, Any]]:
    """Write requests the operator made in `namespace` after `since` (epoch seconds), from the audit log."""
    writes = []
    for line in audit_log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not str(event.get("userAgent", "")).startswith(OPERATOR_USER_AGENTS):
            continue
        if event.get("objectRef", {}).get("namespace") != namespace:
            continue
        stamp = event.get("requestReceivedTimestamp", "")
        if stamp and _epoch(stamp) >= since:
            writes.append(event)
    return writes


def _epoch(stamp: str) -> float:
    """RFC 3339 with microseconds ("2026-01-01T00:00:00.123456Z") to epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait_seconds(seconds: float) -> None:
    """Let time pass on purpose (an observation window, not a wait for a condition)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, deadline - time.monotonic()))
