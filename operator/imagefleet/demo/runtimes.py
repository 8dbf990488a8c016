"""A real `imagefleet-runtime` process on loopback (`tiny` on CPU by default), outside any cluster: what
the bench and dashboard tests load. The demo itself no longer uses it: its pods serve (docs/local-fleet.md)."""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from imagefleet.dev import processes
from imagefleet.dev.errors import DevError

# One torch thread per runtime: several share a laptop's cores without thrashing.
_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class RuntimeProcess:
    """One runtime serving on 127.0.0.1:`port` (its /metrics on `metrics_port`), its output in `log`."""

    port: int
    metrics_port: int
    process: Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{processes.HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}"

    @property
    def metrics_address(self) -> str:
        """host:port of /metrics, as a Prometheus target."""
        return f"{processes.HOST}:{self.metrics_port}"

    def ready(self) -> bool:
        """True once /readyz answers 200; a DevError if the process has exited."""
        if self.process.poll() is not None:
            raise DevError(f"imagefleet-runtime exited with {self.process.returncode}: see {self.log}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 300.0) -> None:
        processes.wait_for(self.ready, timeout, f"imagefleet-runtime on {self.url} to be ready (see {self.log})")

    def stop(self) -> None:
        processes.stop(self.process.pid)
        self.process.wait()


def start_runtime(log: Path, *, model: str = "tiny", settings: Mapping[str, str] | None = None) -> RuntimeProcess:
    """Start `imagefleet-runtime` for `model` on CPU at a free port; `settings` are IMAGEFLEET_* variables."""
    if importlib.util.find_spec("imagefleet_runtime") is None:
        raise DevError("the runtime is not installed here: pip install 'imagefleet[runtime]'")
    port, metrics_port = processes.free_port(), processes.free_port()
    env = {
        **_THREADS,
        **(settings or {}),
        "IMAGEFLEET_MODEL": model,
        "IMAGEFLEET_DEVICE": "cpu",
        "IMAGEFLEET_PRECISION": "fp32",
        "IMAGEFLEET_HOST": processes.HOST,
        "IMAGEFLEET_PORT": str(port),
        "IMAGEFLEET_METRICS_PORT": str(metrics_port),
    }
    process = processes.start([sys.executable, "-m", "imagefleet_runtime"], log, env=env)
    return RuntimeProcess(port=port, metrics_port=metrics_port, process=process, log=log)
