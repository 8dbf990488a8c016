"""`imagefleet-runtime download` against a local HTTP server in the Hub's URL layout: the real
huggingface_hub/diffusers download code, no stubbed functions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagefleet_runtime.models.builtin import BUILDERS
from imagefleet_runtime.models.loader import load_pipeline
from imagefleet_runtime.models.manifest import CACHE_MANIFEST, read_manifest
from imagefleet_runtime.settings import Settings

from .fakehub import COMMIT, FakeHub

REPO = "org/tiny"
TOKEN = "hf_test_token"
# What the pipeline needs at fp16: its configs, tokenizer and the fp16 weights, nothing else.
EXPECTED = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline as a Hub repo holds it: default and fp16 weights, plus files no pipeline loads."""
    root = tmp_path_factory.mktemp("repo")
    pipeline = BUILDERS["tiny"]()
    pipeline.save_pretrained(root)
    pipeline.to(dtype=torch.float16).save_pretrained(root, variant="fp16")
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")
    (root / "README.md").write_text("# tiny\n")
    (root / "sample.png").write_bytes(b"\x89PNG")
    return root


def _download(hub: FakeHub, target: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(home),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "imagefleet_runtime", "download", "--model", REPO, "--target", str(target), *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _files(directory: Path) -> set[str]:
    return {path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file()}


def test_download_fetches_only_the_fp16_pipeline_files_and_the_runtime_loads_them(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "org--tiny-fp16"
    with FakeHub({REPO: repo}) as hub:
        result = _download(hub, target, tmp_path / "home", "--variant", "fp16")
    assert result.returncode == 0, result.stderr
    assert _files(target) == EXPECTED | {CACHE_MANIFEST}
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]  # no staging left
    manifest = read_manifest(target)
    assert manifest == {"repoId": REPO, "revision": COMMIT, "variant": "fp16", "files": sorted(EXPECTED)}
    fetched = {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in hub.requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == EXPECTED
    assert all(auth == f"Bearer {TOKEN}" for _, path, auth in hub.requests if path.startswith(f"/{REPO}/"))

    # What a runtime pod does with the mounted cache: offline, the variant from the manifest.
    pipeline, _ = load_pipeline(Settings(model=REPO, model_path=target, offline=True, device="cpu", precision="fp32"))
    assert pipeline.unet.dtype == torch.float32


def test_download_pins_the_revision_it_is_given(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache" / f"org--tiny@{COMMIT}-fp16"
    with FakeHub({REPO: repo}) as hub:
        result = _download(hub, target, tmp_path / "home", "--variant", "fp16", "--revision", COMMIT)
    assert result.returncode == 0, result.stderr
    revisions = {path.split("/resolve/", 1)[1].split("/", 1)[0] for method, path, _ in hub.requests
                 if method == "GET" and "/resolve/" in path}
    assert revisions == {COMMIT}  # every file at the pinned commit, none from the moving main branch
    manifest = read_manifest(target)
    assert manifest is not None and manifest["revision"] == COMMIT


def test_a_failed_download_leaves_no_cache(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "org--tiny-fp16"
    forbidden = frozenset({"unet/diffusion_pytorch_model.fp16.safetensors"})
    with FakeHub({REPO: repo}, forbidden=forbidden) as hub:
        result = _download(hub, target, tmp_path / "home", "--variant", "fp16")
        assert result.returncode == 1
        # The last line is the pod's termination message (FallbackToLogsOnError): what failed and why.
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"downloading {REPO} failed: ") and "403" in last, result.stderr
        assert not target.exists()
        assert list(target.parent.iterdir()) == []  # the staging directory is gone too

        # The Job's next try succeeds once the file is served.
        hub.forbidden = frozenset()
        again = _download(hub, target, tmp_path / "home", "--variant", "fp16")
    assert again.returncode == 0, again.stderr
    assert read_manifest(target) is not None
