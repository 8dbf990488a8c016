"""The emulated engine's cost model against its cited figures (emulation.yaml), and its PNGs."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from imagefleet.catalog import emulation_table, load_gpu_classes, model_catalog
from imagefleet.cost import (
    EmulationError,
    Plan,
    batch_factor,
    builtin_plan,
    call_seconds,
    load_seconds,
)
from imagefleet_runtime.emulated.png import flat_png

GPU_CLASSES = ("h100-80gb", "h200-141gb", "a100-80gb", "l4-24gb", "t4-16gb", "cpu")


def seconds(model: str, gpu_class: str, *, size: int, steps: int, images: int = 1, precision: str = "fp16") -> float:
    plan = builtin_plan(model=model, gpu_class=gpu_class, precision=precision)  # type: ignore[arg-type]
    return call_seconds(plan, width=size, height=size, steps=steps, images=images)


@pytest.mark.parametrize(
    ("model", "gpu_class", "size", "steps", "expected"),
    [
        ("sdxl", "h100-80gb", 1024, 30, 2.496),  # stable-diffusion-xl-1.0-tensorrt README baseline
        ("sdxl", "a100-80gb", 1024, 30, 3.704),  # same table
        ("sd15", "a100-80gb", 512, 50, 1.603),  # fal-ai/stable-diffusion-benchmarks, median
        ("flux1-dev", "h100-80gb", 1024, 28, 6.7),  # flux-fast, bf16 eager baseline
    ],
)
def test_published_anchors_are_reproduced(model: str, gpu_class: str, size: int, steps: int, expected: float) -> None:
    assert seconds(model, gpu_class, size=size, steps=steps) == pytest.approx(expected, abs=5e-4)


def test_every_anchor_reproduces_itself_and_cites_a_source() -> None:
    table = emulation_table()
    for name, model in table.models.items():
        for anchor in model.anchors:
            plan = builtin_plan(model=name, gpu_class=anchor.gpu_class, precision=anchor.precision)
            got = call_seconds(plan, width=anchor.width, height=anchor.height, steps=anchor.steps, images=1)
            assert got == pytest.approx(anchor.seconds, rel=1e-9), (name, anchor.gpu_class)
            if anchor.kind == "measured":
                assert re.search(r"https?://|measured here", anchor.source), (name, anchor.source)
            else:
                assert "derived" in anchor.source, (name, anchor.source)
    for name, cost in table.classes.items():
        for source in (cost.relative_time_source, cost.batch_cost_source, cost.fp32_factor_source):
            assert source.split(":")[0] in {"measured", "derived", "measured here", "definition (reference class)",
                                            "none"}, (name, source)


def test_classes_scale_by_their_published_relative_time() -> None:
    # L4 ~ A10: 9399 ms measured for SDXL (README above); T4 from the diffusers SD 1.5 table.
    assert seconds("sdxl", "l4-24gb", size=1024, steps=30) == pytest.approx(9.399, abs=5e-3)
    assert seconds("sd15", "t4-16gb", size=512, steps=50) == pytest.approx(1.603 / 1.484 * 4.659, rel=1e-9)
    assert seconds("sdxl", "h200-141gb", size=1024, steps=30) == seconds("sdxl", "h100-80gb", size=1024, steps=30)
    ordered = [seconds("sdxl", name, size=1024, steps=30) for name in ("h100-80gb", "a100-80gb", "l4-24gb", "t4-16gb")]
    assert ordered == sorted(ordered)


def test_batching_curve_is_monotonic_bounded_and_matches_the_a100_measurement() -> None:
    for name, cost in emulation_table().classes.items():
        calls = [batch_factor(cost.batch_cost, images) for images in range(1, 65)]
        per_image = [call / images for images, call in enumerate(calls, start=1)]
        assert calls == sorted(calls), name  # a bigger batch never takes less time
        assert per_image == sorted(per_image, reverse=True), name  # nor more time per image
        assert all(images / call < 1 / cost.batch_cost for images, call in enumerate(calls, start=1)), name
    # A100 SD 1.5: 21.66 it/s at batch 1, 3.04 it/s at batch 16 (diffusers torch2.0 tables).
    a100 = emulation_table().classes["a100-80gb"].batch_cost
    assert batch_factor(a100, 16) == pytest.approx(21.66 / 3.04, abs=0.01)
    assert seconds("sdxl", "a100-80gb", size=1024, steps=30, images=16) == pytest.approx(3.704 * 7.12, rel=1e-9)


def test_steps_and_pixels_scale_linearly() -> None:
    full = seconds("sdxl", "h100-80gb", size=1024, steps=30)
    assert seconds("sdxl", "h100-80gb", size=1024, steps=15) == pytest.approx(full / 2)
    assert seconds("sdxl", "h100-80gb", size=512, steps=30) == pytest.approx(full / 4)
    plan = builtin_plan(model="sdxl", gpu_class="h100-80gb", precision="bf16")
    assert call_seconds(plan, width=1024, height=512, steps=30, images=1) == pytest.approx(full / 2)


def test_fp32_is_slower_by_the_class_factor() -> None:
    assert seconds("sdxl", "h100-80gb", size=1024, steps=30, precision="fp32") == pytest.approx(2.496 * 1.59)
    assert seconds("sd15", "t4-16gb", size=512, steps=50, precision="fp32") == pytest.approx(
        seconds("sd15", "t4-16gb", size=512, steps=50) * 8.0
    )


def test_tiny_uses_its_cpu_measurement_on_every_class_and_precision() -> None:
    measured = seconds("tiny", "cpu", size=64, steps=25, precision="fp32")
    assert measured == pytest.approx(0.666)
    for name in GPU_CLASSES:
        for precision in load_gpu_classes()[name].precisions:
            assert seconds("tiny", name, size=64, steps=25, precision=precision) == measured


def test_load_reads_the_weights_at_the_stated_bandwidth() -> None:
    plan = builtin_plan(model="sdxl", gpu_class="h100-80gb", precision="fp16")
    parameters = sum(model_catalog()["sdxl"].components.values()) * 1e9
    assert load_seconds(plan) == pytest.approx(parameters * 2 / 2**20 / 1000, rel=1e-3)
    fp32 = builtin_plan(model="sdxl", gpu_class="h100-80gb", precision="fp32")
    assert load_seconds(fp32) == pytest.approx(2 * load_seconds(plan), rel=1e-3)


@pytest.mark.parametrize(
    ("model", "gpu_class", "precision", "message"),
    [
        ("sdxl", "v100-32gb", "fp16", "not an emulated GPU class"),
        ("my-org/custom", "h100-80gb", "fp16", "no emulation figures"),
        ("sdxl", "t4-16gb", "bf16", "t4-16gb cannot run bf16"),
        ("sdxl", "cpu", "fp32", "no emulation figure for sdxl on cpu"),
    ],
)
def test_what_cannot_be_emulated_is_refused_with_the_reason(
    model: str, gpu_class: str, precision: str, message: str
) -> None:
    with pytest.raises(EmulationError, match=message):
        builtin_plan(model=model, gpu_class=gpu_class, precision=precision)  # type: ignore[arg-type]


def test_memory_follows_the_operators_fit_estimate() -> None:
    small: Plan = builtin_plan(model="flux1-dev", gpu_class="l4-24gb", precision="bf16")
    large: Plan = builtin_plan(model="flux1-dev", gpu_class="h100-80gb", precision="bf16")
    assert not small.fits(1, 1024, 1024)
    assert large.fits(1, 1024, 1024) and not large.fits(64, 1024, 1024)


def test_png_is_valid_of_the_asked_size_and_colour() -> None:
    data = flat_png(96, 40, (12, 34, 56))
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.size) == ("PNG", (96, 40))
    assert image.convert("RGB").getpixel((95, 39)) == (12, 34, 56)
    assert len(flat_png(1024, 1024, (1, 2, 3))) < 2048
