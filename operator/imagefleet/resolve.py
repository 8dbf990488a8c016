"""Resolve a spec against the catalogs and the tier: everything a replica will run with."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import GPUClass, ModelInfo, Precision, model_catalog
from .crd.models import GenerationSpec, ImageModelDeploymentSpec
from .tiers import Autoscaling, Batching, effective_autoscaling, effective_batching

@dataclass(frozen=True)
class Generation:
    default_steps: int
    max_steps: int
    default_guidance_scale: float
    default_width: int
    default_height: int
    max_width: int
    max_height: int


# For a Hugging Face repo id without spec.model.family: the runtime's own defaults.
FALLBACK_GENERATION = Generation(
    default_steps=25, max_steps=100, default_guidance_scale=7.0,
    default_width=512, default_height=512, max_width=1024, max_height=1024,
)


@dataclass(frozen=True)
class Resolved:
    """A spec with every omitted setting filled in."""

    spec: ImageModelDeploymentSpec
    # The catalog entry of the model (or of its family); None for an unknown repo id.
    model: ModelInfo | None
    # None when spec.gpuClass is not in the operator's catalog.
    gpu_class: GPUClass | None
    # spec.precision, or the model's preferred one when left out.
    precision: Precision
    batching: Batching
    autoscaling: Autoscaling
    generation: Generation


def catalog_model(spec: ImageModelDeploymentSpec) -> ModelInfo | None:
    """The catalog entry describing the model: its own, or its family's."""
    catalog = model_catalog()
    return catalog.get(spec.model.name) or (catalog[spec.model.family] if spec.model.family else None)


def effective_generation(given: GenerationSpec | None, model: ModelInfo | None) -> Generation:
    """Generation settings: what the user set, else the model's recommendation.

    Defaults never exceed limits: an omitted limit grows to a default the user
    set, an omitted default shrinks to a limit the user set.
    """
    given = given or GenerationSpec()
    if model is not None:
        d = model.defaults
        fallback = Generation(
            default_steps=d.steps, max_steps=max(100, d.steps), default_guidance_scale=d.guidance_scale,
            default_width=d.width, default_height=d.height, max_width=d.max_width, max_height=d.max_height,
        )
    else:
        fallback = FALLBACK_GENERATION

    def pair(default: str, limit: str) -> tuple[int, int]:
        user_default: int | None = getattr(given, default)
        user_limit: int | None = getattr(given, limit)
        model_default: int = getattr(fallback, default)
        model_limit: int = getattr(fallback, limit)
        if user_limit is None:
            value = model_default if user_default is None else user_default
            return value, max(model_limit, value)
        return (min(model_default, user_limit) if user_default is None else user_default), user_limit

    steps, max_steps = pair("default_steps", "max_steps")
    width, max_width = pair("default_width", "max_width")
    height, max_height = pair("default_height", "max_height")
    guidance = given.default_guidance_scale
    return Generation(
        default_steps=steps,
        max_steps=max_steps,
        default_guidance_scale=fallback.default_guidance_scale if guidance is None else guidance,
        default_width=width,
        default_height=height,
        max_width=max_width,
        max_height=max_height,
    )


# For a Hugging Face repo id without spec.model.family.
FALLBACK_PRECISION: Precision = "fp16"


def effective_precision(spec: ImageModelDeploymentSpec, model: ModelInfo | None) -> Precision:
    """What the user set, else the model's preferred precision (bf16 for FLUX and SD 3.5)."""
    if spec.precision is not None:
        return spec.precision
    return model.precision.preferred if model is not None else FALLBACK_PRECISION


def resolve(spec: ImageModelDeploymentSpec, gpu_classes: dict[str, GPUClass]) -> Resolved:
    model = catalog_model(spec)
    return Resolved(
        spec=spec,
        model=model,
        gpu_class=gpu_classes.get(spec.gpu_class),
        precision=effective_precision(spec, model),
        batching=effective_batching(spec),
        autoscaling=effective_autoscaling(spec),
        generation=effective_generation(spec.generation, model),
    )
