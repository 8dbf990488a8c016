"""Speed options: channels-last, fused QKV, TF32 and torch.compile's size buckets.

Compiling the tiny UNet on this CPU takes a minute or more per graph, so most compile tests check the
size buckets, the 422 and the warm-up's calls through the real app on the emulated engine (where
compile compiles nothing but keeps its size rules); one `slow` test, the last, compiles for real.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy
import pytest
import torch
from fastapi.testclient import TestClient

from imagefleet_runtime.__main__ import EXIT_BAD_SETTINGS, load_settings
from imagefleet_runtime.app import create_app, load_engine
from imagefleet_runtime.batcher import BatchKey, ImageSpec
from imagefleet_runtime.engines import CFG_GUIDANCE, WARM_UP_STEPS, warm_up_plan
from imagefleet_runtime.errors import ModelLoadError
from imagefleet_runtime.settings import Settings
from imagefleet_runtime.speed import tf32_applies
from tests.helpers import wait_until

from .test_runtime_warm_up import Recording

# SD 1.5 on an emulated H100 (native 512x512), time compressed: the real app and batcher, no kernels.
EMULATED = {"engine": "emulated", "gpu_class": "h100-80gb", "model": "sd15", "precision": "fp16",
            "emulation_speedup": 1000.0, "max_width": 768, "max_height": 768, "default_steps": 4}


def test_tf32_applies_only_to_fp32_on_cuda() -> None:
    assert tf32_applies("cuda", "fp32")
    assert not tf32_applies("cuda", "fp16") and not tf32_applies("cuda", "bf16")
    assert not tf32_applies("cpu", "fp32")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--tf32", "--precision", "bf16"], "tf32 needs precision fp32"),
        (["--tf32", "--device", "cpu"], "tf32 needs device cuda"),
        (["--compile-sizes", "512x512"], "compile_sizes needs compile"),
        (["--compile", "--compile-sizes", "512x512,1024x512", "--max-width", "768"], "compile_sizes: 1024x512"),
        (["--compile", "--compile-sizes", "512by512"], "compile_sizes"),
    ],
)
def test_impossible_combinations_are_refused_naming_the_setting(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(argv)
    assert exit_info.value.code == EXIT_BAD_SETTINGS
    assert words in capsys.readouterr().err


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFLEET_COMPILE", "true")
    monkeypatch.setenv("IMAGEFLEET_COMPILE_SIZES", "768x512,512x512,768x512")
    monkeypatch.setenv("IMAGEFLEET_CHANNELS_LAST", "true")
    settings = load_settings(["--fuse-qkv"])
    assert settings.compile and settings.channels_last and settings.fuse_qkv and not settings.tf32
    assert settings.compile_buckets == ((768, 512), (512, 512))


def test_tf32_on_a_device_that_resolves_to_cpu_fails_the_load() -> None:
    if torch.cuda.is_available():
        pytest.skip("device auto resolves to cuda here")
    with pytest.raises(ModelLoadError, match="tf32 needs precision fp32 on cuda.*runs fp32 on cpu"):
        load_engine(Settings(model="tiny", device="auto", tf32=True))


def test_channels_last_and_fused_qkv_are_applied_to_the_denoiser_and_the_vae() -> None:
    tf32_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    plain = load_engine(Settings(model="tiny", device="cpu"))
    fast = load_engine(Settings(model="tiny", device="cpu", channels_last=True, fuse_qkv=True))
    assert fast.summary.endswith("(channels_last, fuse_qkv)")
    for engine, applied in ((plain, False), (fast, True)):
        for module in (engine.pipeline.unet, engine.pipeline.vae):
            convolutions = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
            assert convolutions and all(
                w.is_contiguous(memory_format=torch.channels_last) == applied for w in convolutions if w.shape[-1] > 1
            )
            attentions = [m for m in module.modules() if hasattr(m, "fused_projections")]
            assert attentions and all(bool(m.fused_projections) == applied for m in attentions)
            assert all(hasattr(m, "to_qkv") == applied for m in attentions if not m.is_cross_attention)
    # Without tf32 the process's TF32 flags are left as they were (torch's defaults in a server: matmuls in full
    # fp32), so an upgrade changes no existing pod's numerics.
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32_flags
    # The same seed gives the same image, up to float reassociation in the fused matmul.
    key = BatchKey(64, 64, 2, 5.0)
    spec = [ImageSpec("a lighthouse", None, 7)]
    before = numpy.asarray(plain.generate(key, spec)[0], dtype=numpy.int16)
    after = numpy.asarray(fast.generate(key, spec)[0], dtype=numpy.int16)
    assert numpy.abs(before - after).max() <= 2


def test_warm_up_plan_without_compile_is_the_largest_call_then_the_timed_one() -> None:
    default, largest = BatchKey(512, 512, 25, 1.0), BatchKey(768, 768, 25, 1.0)
    steps = WARM_UP_STEPS
    assert warm_up_plan(default, largest, 4) == [
        (BatchKey(768, 768, steps, CFG_GUIDANCE), 4), (BatchKey(512, 512, steps, 1.0), 4),
    ]


def test_warm_up_plan_with_compile_runs_every_bucket_at_the_batch_sizes_that_compile() -> None:
    default, largest = BatchKey(512, 512, 25, 1.0), BatchKey(768, 768, 25, 1.0)
    plan = warm_up_plan(default, largest, 4, [(768, 512), (512, 512)])
    s, g = WARM_UP_STEPS, CFG_GUIDANCE
    assert plan == [
        (BatchKey(768, 512, s, g), 4), (BatchKey(768, 512, s, g), 1), (BatchKey(768, 512, s, 1.0), 1),
        (BatchKey(512, 512, s, g), 4), (BatchKey(512, 512, s, g), 1), (BatchKey(512, 512, s, 1.0), 1),
        (BatchKey(512, 512, s, 1.0), 4),  # timed, compiled by now
    ]
    # Batch 1 is the largest batch: no call twice.
    assert warm_up_plan(default, largest, 1, [(512, 512)]) == [
        (BatchKey(512, 512, s, g), 1), (BatchKey(512, 512, s, 1.0), 1), (BatchKey(512, 512, s, 1.0), 1),
    ]


def _recorded_app(settings: Settings) -> tuple[TestClient, list[Recording]]:
    engines: list[Recording] = []

    def load(given: Settings) -> Recording:
        engines.append(Recording(load_engine(given)))
        return engines[0]

    return TestClient(create_app(settings, load=load)), engines


def _sizes(calls: Sequence[tuple[BatchKey, int, float]]) -> list[tuple[int, int, int, float]]:
    return [(key.width, key.height, images, key.guidance_scale) for key, images, _ in calls]


def test_compile_limits_requests_to_the_warmed_up_sizes(caplog: pytest.LogCaptureFixture) -> None:
    """The real app: every bucket (the default size included) is warmed up before Ready; a request for
    another size gets a 422 naming `size`, one for a bucket is served without a new warm-up call."""
    settings = Settings(**EMULATED, compile=True, compile_sizes="768x512,512x768", max_batch_size=3,
                        default_guidance_scale=1.0)
    caplog.set_level(logging.INFO, logger="imagefleet_runtime")
    client, engines = _recorded_app(settings)
    with client:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60, interval=0.05, message="/readyz")
        warmed = _sizes(engines[0].calls)
        buckets = {(width, height) for width, height, _, _ in warmed}
        assert buckets == {(768, 512), (512, 768), (512, 512)}
        for bucket in buckets:
            assert {(images, guidance) for w, h, images, guidance in warmed if (w, h) == bucket} >= {
                (3, CFG_GUIDANCE), (1, CFG_GUIDANCE), (1, 1.0)
            }
        refused = client.post("/v1/images/generations", json={"prompt": "a quay", "size": "768x768"})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["param"] == "size" and error["type"] == "invalid_request_error"
        assert "768x768" in error["message"] and "768x512, 512x768, 512x512" in error["message"]
        served = client.post("/v1/images/generations", json={"prompt": "a quay", "size": "512x768", "n": 2})
        assert served.status_code == 200 and len(served.json()["data"]) == 2
        assert _sizes(engines[0].calls[len(warmed):]) == [(512, 768, 2, 1.0)]
        assert client.post("/v1/images/generations", json={"prompt": "a quay"}).status_code == 200
    assert "fuse_qkv" not in caplog.text and "compile: no effect on the emulated engine" in caplog.text
    assert "warming up at 768x512 and 512x768 and 512x512, 3 image(s)" in caplog.text


def test_a_compile_size_the_model_cannot_take_fails_the_startup() -> None:
    """Above max_width x max_height as the model sets it (512x512 native for sd15 when unset)."""
    settings = Settings(**{**EMULATED, "max_width": None, "max_height": None}, compile=True,
                        compile_sizes="768x768")
    fatal: list[str] = []
    with TestClient(create_app(settings, on_fatal=fatal.append)):
        wait_until(lambda: bool(fatal), timeout=30, interval=0.05, message="the startup to fail")
    assert "compile_sizes: 768x768 is above max_width x max_height 512x512" in fatal[0]


@pytest.mark.slow
def test_after_the_warm_up_no_request_compiles() -> None:
    """torch.compile for real (tiny on CPU, minutes: a minute or more per graph here): after the warm-up,
    requests at every batch size, with guidance on and off, at both sizes, add no compiled graph."""
    from torch._dynamo.utils import counters

    settings = Settings(model="tiny", device="cpu", compile=True, compile_sizes="64x32", max_batch_size=3,
                        default_steps=2)
    client, engines = _recorded_app(settings)
    with client:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=1200, interval=0.5, message="/readyz")
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 3  # the warm-up compiled (and the counter counts)
        for size in ("64x64", "64x32"):
            for n in (1, 2, 3):
                for guidance in (1.0, 7.0):
                    body = {"prompt": "a quay", "size": size, "n": n, "guidance_scale": guidance}
                    assert client.post("/v1/images/generations", json=body).status_code == 200
        assert counters["stats"]["unique_graphs"] == graphs
        assert len(engines[0].calls) == len(warm_up_plan(
            BatchKey(64, 64, 2, 5.0), BatchKey(64, 64, 2, 5.0), 3, [(64, 64), (64, 32)])) + 12
