"""A local Prometheus, built from its Go module with Kubernetes service discovery
(Debian's package leaves that out; see components.PROMETHEUS).

Runtime pods are found as in a cluster: Kubernetes service discovery of pods against
the local API server, with the scrape job the docs give users (scrape-runtime-pods.yaml).
Other loopback targets (the tests' synthetic exporters) come from a file-based service
discovery file, so they can change while Prometheus runs.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import build, components, processes
from .errors import DevError


def runtime_pods_job() -> dict[str, Any]:
    """The scrape job for runtime pods that the docs tell users to add (scrape-runtime-pods.yaml)."""
    text = resources.files(__package__).joinpath("scrape-runtime-pods.yaml").read_text()
    job: dict[str, Any] = yaml.safe_load(text)
    return job


@dataclass(frozen=True)
class Target:
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


class LocalPrometheus:
    """Start, stop and restart a Prometheus whose data survives a restart."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int = 0,
        scrape_interval: str = "1s",
        pods_kubeconfig: Path | None = None,
    ) -> None:
        """`pods_kubeconfig`: discover runtime pods in that cluster (ControlPlane.prometheus_kubeconfig)."""
        self.binary = build.ensure_built([components.PROMETHEUS], progress=lambda _: None)["prometheus"]
        self.directory = directory
        self.port = port or processes.free_port()
        self.scrape_interval = scrape_interval
        self.pods_kubeconfig = pods_kubeconfig
        self.targets_file = directory / "targets.json"
        self.log = directory / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.set_targets([])

    @property
    def url(self) -> str:
        return f"http://{processes.HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None when stopped)."""
        return None if self._process is None else self._process.pid

    def set_targets(self, targets: list[Target]) -> None:
        groups = [{"targets": [t.address], "labels": t.labels} for t in targets]
        staging = self.targets_file.with_suffix(".tmp")
        staging.write_text(json.dumps(groups))
        staging.replace(self.targets_file)

    def start(self) -> None:
        jobs: list[dict[str, Any]] = [
            {
                "job_name": "file-targets",
                "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
            }
        ]
        if self.pods_kubeconfig is not None:
            pods = runtime_pods_job()
            for discovery in pods["kubernetes_sd_configs"]:
                discovery["kubeconfig_file"] = str(self.pods_kubeconfig)
            jobs.append(pods)
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": jobs,
        }
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._process = processes.start(
            [
                str(self.binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address={processes.HOST}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            self.log,
        )
        processes.wait_for(
            lambda: self._ready(), 60, f"Prometheus on {self.url} to be ready (see {self.log})"
        )

    def stop(self) -> None:
        if self._process is not None:
            processes.stop(self._process.pid)
            self._process.wait()
            self._process = None

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise DevError(f"Prometheus exited with {self._process.returncode}: see {self.log}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
