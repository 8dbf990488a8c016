"""benchmarks/gpu_runtime.py --self-test: the GPU benchmark's own code path on CPU, tiny sizes, in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_self_test_measures_every_point_and_skips_only_with_a_reason(tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_runtime.py"), "--self-test",
                           "--output", str(output)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert report["self_test"] is True and report["gpu"] is False
    assert report["dense_peak_tflops"] is None and "no GPU memory" in report["memory_note"]
    points = report["denoiser"]
    assert {(p["precision"], p["batch"]) for p in points} == {(p, b) for p in ("fp32", "bf16") for b in (1, 2)}
    measured = [p for p in points if p["skipped"] is None]
    skipped = [p for p in points if p["skipped"] is not None]
    assert {tuple(p["options"]) for p in measured} >= {(), ("channels_last",), ("fused_qkv",)}
    assert {option for p in skipped for option in p["options"]} == {"compile", "tf32"}
    for point in measured:
        assert point["images_per_second"] > 0 and point["unet_tflops_per_image"] > 0
        assert point["p95_seconds"] >= point["median_seconds"] > 0
        assert point["peak_memory_mib"] is None and point["fraction_of_dense_peak"] is None
    assert [s["precision"] for s in report["server"]] == ["fp32", "bf16"]
    for result in report["server"]:
        assert result["images_per_second"] > 0 and result["raw_pipeline_images_per_second"] > 0
        assert result["mean_batch"] >= 1
