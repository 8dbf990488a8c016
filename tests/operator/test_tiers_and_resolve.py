"""Tier presets fill what the user left out; the model fills generation settings."""

from __future__ import annotations

from typing import Any

import pytest

from imagefleet.catalog import model_catalog
from imagefleet.crd.models import GenerationSpec, ImageModelDeploymentSpec
from imagefleet.resolve import effective_generation
from imagefleet.tiers import PRESETS, effective_autoscaling, effective_batching


def _spec(**fields: Any) -> ImageModelDeploymentSpec:
    return ImageModelDeploymentSpec.model_validate({"model": {"name": "sd15"}, "gpuClass": "t4-16gb", **fields})


def test_bulk_batches_large_and_premium_runs_alone() -> None:
    bulk, premium = effective_batching(_spec(tier="bulk")), effective_batching(_spec(tier="premium"))
    assert bulk.max_batch_size > 1 and premium.max_batch_size == 1
    assert bulk.queue_size > premium.queue_size
    bulk_scaling, premium_scaling = effective_autoscaling(_spec(tier="bulk")), effective_autoscaling(_spec(tier="premium"))
    assert premium_scaling.target_p95_seconds < bulk_scaling.target_p95_seconds
    assert premium_scaling.min_replicas >= 1


@pytest.mark.parametrize("tier", ["bulk", "standard", "premium"])
def test_omitted_fields_come_from_the_tier(tier: str) -> None:
    preset = PRESETS[tier]  # type: ignore[index]
    assert effective_batching(_spec(tier=tier)) == preset.batching
    assert effective_autoscaling(_spec(tier=tier)) == preset.autoscaling


def test_what_the_user_set_wins() -> None:
    spec = _spec(tier="bulk", batching={"maxBatchSize": 2},
                 autoscaling={"enabled": True, "minReplicas": 2, "targetP95Seconds": 3.5})
    batching, scaling = effective_batching(spec), effective_autoscaling(spec)
    assert batching.max_batch_size == 2
    assert batching.queue_size == PRESETS["bulk"].batching.queue_size
    assert scaling.enabled and scaling.min_replicas == 2 and scaling.target_p95_seconds == 3.5
    assert scaling.max_replicas == PRESETS["bulk"].autoscaling.max_replicas


def test_preset_bounds_never_contradict_user_bounds() -> None:
    high_min = effective_autoscaling(_spec(tier="standard", autoscaling={"minReplicas": 10}))
    assert (high_min.min_replicas, high_min.max_replicas) == (10, 10)
    low_max = effective_autoscaling(_spec(tier="standard", autoscaling={"maxReplicas": 1, "minReplicas": 0}))
    assert (low_max.min_replicas, low_max.max_replicas) == (0, 1)
    big_batch = effective_batching(_spec(tier="premium", batching={"maxBatchSize": 32}))
    assert big_batch.queue_size >= 32
    windows = effective_autoscaling(_spec(tier="bulk", autoscaling={"scaleDownStabilizationSeconds": 10}))
    assert windows.scale_up_stabilization_seconds <= windows.scale_down_stabilization_seconds == 10


def test_generation_defaults_come_from_the_model() -> None:
    sdxl = effective_generation(None, model_catalog()["sdxl"])
    assert (sdxl.default_width, sdxl.default_height, sdxl.default_steps) == (1024, 1024, 30)
    schnell = effective_generation(None, model_catalog()["flux1-schnell"])
    assert (schnell.default_steps, schnell.default_guidance_scale) == (4, 0.0)


def test_generation_defaults_stay_within_limits() -> None:
    sdxl = model_catalog()["sdxl"]
    lower_limit = effective_generation(GenerationSpec(max_width=768), sdxl)
    assert (lower_limit.default_width, lower_limit.max_width) == (768, 768)
    higher_default = effective_generation(GenerationSpec(default_height=1536), sdxl)
    assert (higher_default.default_height, higher_default.max_height) == (1536, 1536)
    steps = effective_generation(GenerationSpec(max_steps=10), sdxl)
    assert steps.default_steps == 10


def test_unknown_model_gets_the_runtime_defaults() -> None:
    generic = effective_generation(None, None)
    assert (generic.default_width, generic.max_width, generic.default_steps) == (512, 1024, 25)
