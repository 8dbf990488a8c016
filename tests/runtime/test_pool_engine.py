"""The diffusers pool engine in process (tiny, CPU): what a checkpoint brings of its own, and what it shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet_runtime.app import load_engine
from imagefleet_runtime.batcher import BatchKey, CheckpointRef, ImageSpec
from imagefleet_runtime.pool_engine import PoolPipelineEngine, parts_mib
from imagefleet_runtime.settings import Settings

from .pool_weights import make_checkpoint


def test_a_checkpoint_brings_only_what_differs_from_the_base(tmp_path: Path) -> None:
    engine = load_engine(Settings(model="tiny", device="cpu", pool_family="tiny", gpu_budget_mib=10,
                                  host_budget_mib=0))
    assert isinstance(engine, PoolPipelineEngine)
    base = engine.pipeline
    unet_mib, vae_mib = parts_mib({"unet": base.unet}), parts_mib({"vae": base.vae})
    same = make_checkpoint(tmp_path / "same-vae", 1)
    own = make_checkpoint(tmp_path / "own-vae", 2, own_vae=True)
    spec = [ImageSpec("a lighthouse", None, 3)]
    for folder, mib, shares_vae in ((same, unet_mib, True), (own, unet_mib + vae_mib, False)):
        key = BatchKey(64, 64, 2, 5.0, CheckpointRef(str(folder)))
        prepared = engine.prepare(key)
        assert prepared.touch.moves[-1].mib == pytest.approx(mib)
        assert engine.pipeline.unet is not base.unet
        assert (engine.pipeline.vae is base.vae) is shares_vae
        assert engine.pipeline.text_encoder is base.text_encoder  # equal in both: loaded once
        assert len(engine.generate(key, spec)) == 1
