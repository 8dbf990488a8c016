"""`. scripts/env` puts the virtual environment and the built binaries on PATH, as getting-started.md says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imagefleet.dev.build import binary_dir, ensure_built
from imagefleet.dev.components import ALL, HELM, KUBECTL

from .yaml_blocks import ROOT


def test_sourcing_it_finds_the_venv_and_the_built_tools(tmp_path: Path) -> None:
    ensure_built(ALL, progress=lambda message: print(f"[build] {message}"))
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["bash", "-c", ". scripts/env && command -v imagefleet python kubectl helm"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "IMAGEFLEET_VENV": str(venv), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(venv / "bin" / "imagefleet"), str(venv / "bin" / "python"),
                                     str(binary_dir(KUBECTL) / "kubectl"), str(binary_dir(HELM) / "helm")]


def test_without_a_venv_it_says_to_bootstrap(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", ". scripts/env; echo \"$PATH\""], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "IMAGEFLEET_VENV": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"},
    )
    assert "run ./scripts/bootstrap first" in result.stderr
    assert result.stdout.strip() == "/usr/bin:/bin"
