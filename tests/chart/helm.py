"""Running the real helm and kubectl binaries against the chart (no mocks of either)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imagefleet.dev.build import binaries
from imagefleet.dev.components import KUBECTL

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagefleet"


def kubectl_binary() -> str:
    """kubectl of the control plane's version when `imagefleet dev` built it, else the one on PATH."""
    built = binaries([KUBECTL])["kubectl"]
    return str(built) if built.exists() else "kubectl"


@dataclass(frozen=True)
class Helm:
    """The helm binary with its config, cache and data kept in a private directory."""

    binary: Path
    home: Path

    def run(self, *args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        result = subprocess.run([str(self.binary), *args], env=env, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(self, *args: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`helm template` of the chart with `values`; the rendered documents."""
        return [doc for doc in yaml.safe_load_all(self.render(*args, values=values)) if doc]

    def render(self, *args: str, values: dict[str, Any] | None = None, check: bool = True) -> str:
        result = self.with_values("template", "imagefleet", str(CHART), *args,
                                  values=values, check=check)
        return result.stdout if check else result.stdout + result.stderr

    def with_values(
        self, *args: str, values: dict[str, Any] | None, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run helm with `values` written to a temporary values file (`-f`)."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.home) as values_file:
            yaml.safe_dump(values or {}, values_file)
            values_file.flush()
            return self.run(*args, "-f", values_file.name, kubeconfig=kubeconfig, check=check)


def kubectl(*args: str, kubeconfig: Path, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]
