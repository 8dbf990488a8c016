"""The memory-fit estimate: model x precision x batch size against the class's memory."""

from __future__ import annotations

from typing import Any

import pytest

from imagefleet.catalog import load_gpu_classes, model_catalog
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.fit import MARGIN, RUNTIME_OVERHEAD_MIB, check_fit, estimate, usable_mib
from imagefleet.resolve import resolve
from imagefleet.builders.deployment import runtime_env

CLASSES = load_gpu_classes()


def _fit(**spec: Any):  # type: ignore[no-untyped-def]
    parsed = ImageModelDeploymentSpec.model_validate(spec)
    return check_fit(resolve(parsed, CLASSES), CLASSES)


def test_weights_follow_parameters_and_precision() -> None:
    sdxl = model_catalog()["sdxl"]
    half = estimate(sdxl, "bf16", 1, 1024, 1024)
    full = estimate(sdxl, "fp32", 1, 1024, 1024)
    assert full.weights_mib["unet"] == pytest.approx(2 * half.weights_mib["unet"], abs=1)
    assert half.weights_mib["unet"] == pytest.approx(2.567e9 * 2 / 2**20, abs=1)
    assert full.activations_mib == pytest.approx(2 * half.activations_mib, abs=1)
    assert half.overhead_mib == RUNTIME_OVERHEAD_MIB


def test_estimate_grows_with_batch_and_image_size() -> None:
    sd15 = model_catalog()["sd15"]
    totals = [estimate(sd15, "fp16", batch, 512, 512).total_mib for batch in (1, 2, 4, 8)]
    assert totals == sorted(totals) and len(set(totals)) == 4
    assert estimate(sd15, "fp16", 1, 1024, 1024).total_mib > estimate(sd15, "fp16", 1, 512, 512).total_mib


def test_margin_is_kept_free() -> None:
    assert usable_mib(CLASSES["l4-24gb"]) == int(23034 * (1 - MARGIN))


@pytest.mark.parametrize(
    ("model", "precision", "gpu_class", "tier", "fits"),
    [
        ("tiny", "fp32", "cpu", "standard", True),
        ("sd15", "fp16", "t4-16gb", "bulk", True),
        ("sdxl", "fp16", "t4-16gb", "premium", True),
        ("sdxl", "fp16", "t4-16gb", "standard", False),  # batch 4: the fp32 VAE upcast tips it over
        ("sdxl", "bf16", "l4-24gb", "standard", True),
        ("sdxl", "fp32", "t4-16gb", "standard", False),
        ("sd35-large", "fp32", "l4-24gb", "standard", False),
        ("sd35-large", "bf16", "a100-80gb", "standard", True),
        ("flux1-dev", "bf16", "l4-24gb", "premium", False),
        ("flux1-schnell", "bf16", "h100-80gb", "bulk", True),
        ("flux1-dev", "fp32", "h200-141gb", "premium", True),
    ],
)
def test_known_combinations(model: str, precision: str, gpu_class: str, tier: str, fits: bool) -> None:
    fit = _fit(model={"name": model}, precision=precision, gpuClass=gpu_class, tier=tier)
    assert fit.status == ("True" if fits else "False"), fit.message
    assert fit.estimate_mib is not None and fit.limit_mib is not None
    assert (fit.estimate_mib <= fit.limit_mib) is fits


def test_no_fit_message_names_estimate_limit_and_remedies() -> None:
    fit = _fit(model={"name": "sd35-large"}, precision="fp32", gpuClass="l4-24gb")
    assert fit.reason == "InsufficientMemory"
    assert f"{fit.estimate_mib / 1024:.1f} GiB" in fit.message
    assert f"{fit.limit_mib / 1024:.1f} GiB usable" in fit.message
    assert "a100-80gb" in fit.message


def test_remedy_suggests_a_smaller_batch_when_that_suffices() -> None:
    fit = _fit(model={"name": "sd35-medium"}, precision="fp16", gpuClass="l4-24gb", tier="standard")
    assert fit.status == "False" and "spec.batching.maxBatchSize 2" in fit.message
    smaller = _fit(model={"name": "sd35-medium"}, precision="fp16", gpuClass="l4-24gb", batching={"maxBatchSize": 2})
    assert smaller.status == "True"


def test_remedy_suggests_half_precision() -> None:
    fit = _fit(model={"name": "sdxl"}, precision="fp32", gpuClass="t4-16gb", tier="premium")
    assert "spec.precision fp16" in fit.message


def test_bf16_on_t4_is_refused_with_its_reason() -> None:
    fit = _fit(model={"name": "sd15"}, precision="bf16", gpuClass="t4-16gb")
    assert (fit.status, fit.reason) == ("False", "UnsupportedPrecision")
    assert "t4-16gb cannot run bf16" in fit.message and "l4-24gb" in fit.message


def test_unknown_class_lists_the_catalog() -> None:
    fit = _fit(model={"name": "sd15"}, gpuClass="v100-32gb")
    assert (fit.status, fit.reason) == ("False", "UnknownGPUClass") and "t4-16gb" in fit.message


def test_repo_id_without_family_is_unknown_and_still_runs() -> None:
    fit = _fit(model={"name": "someone/sdxl-anime"}, gpuClass="l4-24gb")
    assert (fit.status, fit.reason) == ("Unknown", "UnknownModel") and fit.fits
    sized = _fit(model={"name": "someone/sdxl-anime", "family": "sdxl"}, gpuClass="l4-24gb")
    assert sized.status == "True"


def test_sdxl_fp16_counts_the_fp32_vae_upcast() -> None:
    sdxl = model_catalog()["sdxl"]
    fp16, bf16 = estimate(sdxl, "fp16", 2, 1024, 1024), estimate(sdxl, "bf16", 2, 1024, 1024)
    assert "vae" not in fp16.weights_mib
    assert fp16.weights_mib["vae (fp32 upcast)"] == pytest.approx(2 * bf16.weights_mib["vae"], abs=1)
    upcast = sdxl.fp32_vae_upcast_gib_per_megapixel
    assert upcast > 0
    assert fp16.activations_mib - bf16.activations_mib == pytest.approx(upcast * 1024 * 2 * 1024 * 1024 / 1e6, abs=1)


def test_sd15_counts_its_safety_checker() -> None:
    weights = estimate(model_catalog()["sd15"], "fp16", 1, 512, 512).weights_mib
    assert weights["safety_checker"] == pytest.approx(0.304e9 * 2 / 2**20, abs=1)


@pytest.mark.parametrize(
    ("model", "preferred"),
    [("flux1-dev", "bf16"), ("flux1-schnell", "bf16"), ("sd35-medium", "bf16"), ("sd35-large", "bf16"),
     ("sdxl", "fp16"), ("sd15", "fp16"), ("someone/custom", "fp16")],
)
def test_left_out_precision_is_the_models_preferred(model: str, preferred: str) -> None:
    resolved = resolve(ImageModelDeploymentSpec.model_validate({"model": {"name": model}, "gpuClass": "h100-80gb"}),
                       CLASSES)
    assert resolved.precision == preferred
    assert {"name": "IMAGEFLEET_PRECISION", "value": preferred} in runtime_env(resolved)


def test_flux_at_fp16_is_refused_with_the_reason() -> None:
    fit = _fit(model={"name": "flux1-dev"}, precision="fp16", gpuClass="h100-80gb")
    assert (fit.status, fit.reason) == ("False", "RefusedPrecision") and not fit.fits
    assert "NaN" in fit.message and "bf16" in fit.message


def test_preferred_precision_the_card_cannot_run_says_it_was_the_default() -> None:
    fit = _fit(model={"name": "flux1-schnell"}, gpuClass="t4-16gb")
    assert fit.reason == "UnsupportedPrecision"
    assert "bf16 (the model's preferred precision)" in fit.message
