"""A local OCI registry (CNCF Distribution, built from its Go module): plain HTTP on loopback
only, storage in a directory, for the images and the chart of a release round trip."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from . import build, components, processes
from .errors import DevError


class LocalRegistry:
    def __init__(self, directory: Path, port: int = 0) -> None:
        self.binary = build.ensure_built([components.REGISTRY], progress=lambda _: None)["registry"]
        self.directory = directory
        self.port = port or processes.free_port()
        self.log = directory / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """host:port, as image references and oci:// URLs name it."""
        return f"{processes.HOST}:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        config_file = self.directory / "config.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._process = processes.start([str(self.binary), "serve", str(config_file)], self.log)
        processes.wait_for(self._ready, 30, f"the registry on {self.host} (see {self.log})")

    def stop(self) -> None:
        if self._process is not None:
            processes.stop(self._process.pid)
            self._process.wait()
            self._process = None

    def has_manifest(self, repository: str, reference: str) -> bool:
        """Whether `repository:reference` (a tag or digest) is in the registry."""
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{reference}", method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                               "application/vnd.docker.distribution.manifest.v2+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise DevError(f"the registry exited with {self._process.returncode}: see {self.log}")
        with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as response:
            return bool(response.status == 200)

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
