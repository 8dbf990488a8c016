"""Start the real `imagefleet-runtime` process on loopback and read its metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from imagefleet_runtime.app import create_metrics_app
from tests.helpers import wait_until

STARTUP_TIMEOUT_SECONDS = 300.0  # importing torch + diffusers on a busy shared machine


@dataclass(frozen=True)
class RunningServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    metrics_url: str  # the metrics port's base URL

    @property
    def metrics_address(self) -> str:
        """host:port of the metrics port, as a Prometheus target."""
        return self.metrics_url.removeprefix("http://")

    def metrics_text(self) -> str:
        response = httpx.get(f"{self.metrics_url}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0 when absent)."""
        return sample(self.metrics_text(), name, **labels)


def scrape(client: TestClient) -> str:
    """/metrics of an in-process runtime app (`create_app`), as its metrics port serves it."""
    with TestClient(create_metrics_app(client.app.state.runtime)) as metrics:  # type: ignore[attr-defined]
        response = metrics.get("/metrics")
    response.raise_for_status()
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def runtime_server(log_dir: Path, *flags: str, host: str = "127.0.0.1") -> Iterator[RunningServer]:
    """A tiny-model server on CPU with `flags` at `host`, ready (/readyz 200) when yielded; stopped afterwards."""
    port, metrics_port = free_port(), free_port()
    log = log_dir / f"runtime-{port}.log"
    # One torch thread: the test machine's cores are shared, and oversubscribed OpenMP threads crawl.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "imagefleet_runtime", "--model", "tiny", "--device", "cpu",
               "--host", host, "--port", str(port), "--metrics-port", str(metrics_port), *flags]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, f"http://{host}:{port}", log, f"http://{host}:{metrics_port}")
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"runtime exited with {process.returncode}:\n{log.read_text()}")
            return httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200

        wait_until(ready, timeout=STARTUP_TIMEOUT_SECONDS, interval=0.2, message=f"/readyz of {server.base_url}")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
