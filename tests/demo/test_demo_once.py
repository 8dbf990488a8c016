"""`imagefleet demo --once`: the scripted scenario end to end, on its own control plane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imagefleet.demo.scenario import BULK, PREMIUM, REFUSED

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def test_demo_once_shows_every_expected_state(tmp_path: Path) -> None:
    plot = tmp_path / "demo.png"
    command = [str(Path(sys.executable).with_name("imagefleet")), "demo", "--once", "--plot", str(plot)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    lines = output.splitlines()
    for name, outcome in (
        (BULK, "(bulk) becomes Ready"),
        (PREMIUM, "(premium) becomes Ready"),
        (REFUSED, "is refused: FitsGPU=False (InsufficientMemory), no Deployment"),
        (BULK, "is sized from the gateway's demand (MetricsAvailable)"),
        (BULK, "scales up under the burst"),
        (BULK, "(bulk): at the burst's end, after the scale-up, p95 at the clients is under its target"),
    ):
        assert any(f"✓ {name} {outcome}" in line for line in lines), output
    assert "✗" not in output
    assert any(f"{BULK}: desired replicas 1 ->" in line for line in lines), output
    assert any("burst through the gateway" in line for line in lines), output
    assert "stopped everything" in output
    assert f"wrote {plot}" in output and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
