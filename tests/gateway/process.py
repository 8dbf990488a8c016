"""`imagefleet gateway` as its own process against a control plane, for the tests that go through it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from imagefleet.dev.processes import free_port
from tests.helpers import wait_until


@dataclass(frozen=True)
class GatewayProcess:
    url: str
    pid: int
    metrics_url: str  # GET /metrics is on a port of its own

    def rss_mib(self) -> float:
        """The process's resident memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no VmRSS for process {self.pid}")


@contextmanager
def gateway_process(kubeconfig: Path, namespace: str, log: Path, *extra: str) -> Iterator[GatewayProcess]:
    """The gateway watching `namespace`, ready. Stopped (SIGTERM) on exit."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "imagefleet", "gateway", "--host", "127.0.0.1",
                                    "--port", str(port), "--metrics-port", str(metrics_port), "--namespaces", namespace,
                                    *extra],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, timeout=60, interval=0.2,
                   message=f"the gateway's /readyz (log {log})")
        yield GatewayProcess(url, process.pid, f"http://127.0.0.1:{metrics_port}")
    finally:
        process.terminate()
        process.wait(timeout=30)
