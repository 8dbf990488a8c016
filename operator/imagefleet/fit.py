"""Will one replica fit its GPU class? An estimate made before any GPU is spent.

estimate = weights + activations + runtime overhead, where

- weights: the parameters of every pipeline component the runtime loads
  (denoiser, text encoders, VAE, and the safety checker where the model
  ships one: diffusers keeps them all on the device) x bytes per parameter
  (fp32 4, fp16/bf16 2); a VAE that the pipeline upcasts to fp32 at fp16
  (SDXL) counts at 4;
- activations: the model's working memory per megapixel at fp16 (catalog)
  x the largest image a request may ask for (generation.maxWidth x maxHeight)
  x maxBatchSize, doubled for fp32, plus the upcast VAE decode's extra at fp16;
- runtime overhead: 1 GiB for the CUDA context and the PyTorch runtime.

It fits when the estimate is at most the class memory less a 10 % margin
(allocator fragmentation, cuDNN workspaces and the error of the estimate).
A precision the model is known to break in (catalog: FLUX at fp16) is refused;
a precision the card cannot run (bf16 before Ampere, e.g. T4) never fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .catalog import GPUClass, ModelInfo, Precision
from .resolve import Resolved

MARGIN = 0.10
RUNTIME_OVERHEAD_MIB = 1024
BYTES_PER_PARAMETER: dict[Precision, int] = {"fp32": 4, "fp16": 2, "bf16": 2}
ACTIVATION_FACTOR: dict[Precision, float] = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.0}
MIB_PER_GIB = 1024

# Reasons of the FitsGPU condition.
FITS = "Fits"
INSUFFICIENT_MEMORY = "InsufficientMemory"
UNSUPPORTED_PRECISION = "UnsupportedPrecision"
REFUSED_PRECISION = "RefusedPrecision"
UNKNOWN_GPU_CLASS = "UnknownGPUClass"
UNKNOWN_MODEL = "UnknownModel"
UNSUPPORTED_SPEED_OPTION = "UnsupportedSpeedOption"
# Image sides are multiples of this (the CRD's generation sizes; the runtime checks its model's own).
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class Estimate:
    """Estimated peak memory of one replica, MiB, by part."""

    weights_mib: dict[str, int]
    activations_mib: int
    overhead_mib: int

    @property
    def total_mib(self) -> int:
        return sum(self.weights_mib.values()) + self.activations_mib + self.overhead_mib


@dataclass(frozen=True)
class Fit:
    """The FitsGPU verdict: status True/False/Unknown with its reason and message."""

    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    estimate_mib: int | None = None
    limit_mib: int | None = None
    capacity_mib: int | None = None

    @property
    def fits(self) -> bool:
        """Whether to run it: True, or Unknown (a model the catalog cannot size)."""
        return self.status != "False"


def usable_mib(gpu_class: GPUClass) -> int:
    return math.floor(gpu_class.memory_mib * (1 - MARGIN))


def estimate(model: ModelInfo, precision: Precision, batch_size: int, width: int, height: int) -> Estimate:
    upcast = precision == "fp16" and model.fp32_vae_upcast_gib_per_megapixel > 0
    weights = {}
    for name, billions in model.components.items():
        held = "fp32" if upcast and name == "vae" else precision
        weights[f"{name} (fp32 upcast)" if held != precision else name] = math.ceil(
            billions * 1e9 * BYTES_PER_PARAMETER[held] / 2**20
        )
    megapixels = width * height / 1e6
    per_megapixel = model.activation_gib_per_megapixel * ACTIVATION_FACTOR[precision]
    if upcast:
        per_megapixel += model.fp32_vae_upcast_gib_per_megapixel
    return Estimate(weights, math.ceil(per_megapixel * megapixels * batch_size * MIB_PER_GIB), RUNTIME_OVERHEAD_MIB)


def _gib(mib: int) -> str:
    return f"{mib / MIB_PER_GIB:.1f} GiB"


def _largest_batch(model: ModelInfo, precision: Precision, width: int, height: int, limit: int) -> int:
    batch = 0
    while batch < 64 and estimate(model, precision, batch + 1, width, height).total_mib <= limit:
        batch += 1
    return batch


def check_fit(resolved: Resolved, gpu_classes: dict[str, GPUClass]) -> Fit:
    """The FitsGPU verdict for one replica of `resolved` on its GPU class."""
    spec, precision = resolved.spec, resolved.precision
    gpu_class = resolved.gpu_class
    model = resolved.model
    if model is not None and precision in model.precision.refused:
        policy = model.precision
        return Fit("False", REFUSED_PRECISION,
                   f"{model.name} breaks at {precision}: {policy.refused[precision]}; set spec.precision to one of "
                   f"{', '.join(policy.supported)} (or leave it out for {policy.preferred})")
    if gpu_class is None:
        return Fit("False", UNKNOWN_GPU_CLASS,
                   f"spec.gpuClass {spec.gpu_class!r} is not in the operator's GPU class catalog "
                   f"(known: {', '.join(gpu_classes)})")
    if precision not in gpu_class.precisions:
        alternatives = [name for name, other in gpu_classes.items() if precision in other.precisions]
        given = precision if spec.precision is not None else f"{precision} (the model's preferred precision)"
        return Fit("False", UNSUPPORTED_PRECISION,
                   f"{gpu_class.name} cannot run {given} (it runs {', '.join(gpu_class.precisions)}): "
                   f"set spec.precision to one of those, or pick a class that runs {precision} "
                   f"({', '.join(alternatives) or 'none in the catalog'})")
    speed_problem = _speed_problem(resolved, gpu_class)
    if speed_problem is not None:
        return Fit("False", UNSUPPORTED_SPEED_OPTION, speed_problem)
    if model is None:
        return Fit("Unknown", UNKNOWN_MODEL,
                   f"{spec.model.name} is not a catalog model, so its memory is unknown: set spec.model.family "
                   "to the catalog model it derives from to have it checked")
    generation = resolved.generation
    batch = resolved.batching.max_batch_size
    needed = estimate(model, precision, batch, generation.max_width, generation.max_height)
    limit = usable_mib(gpu_class)
    parts = ", ".join(f"{name} {_gib(mib)}" for name, mib in needed.weights_mib.items())
    summary = (
        f"{model.name} at {precision}, batch {batch} of {generation.max_width}x{generation.max_height} needs "
        f"~{_gib(needed.total_mib)} (weights: {parts}; activations {_gib(needed.activations_mib)}; runtime "
        f"{_gib(needed.overhead_mib)}); {gpu_class.name} has {_gib(limit)} usable "
        f"({_gib(gpu_class.memory_mib)} less {MARGIN:.0%} margin)"
    )
    figures = {"estimate_mib": needed.total_mib, "limit_mib": limit, "capacity_mib": gpu_class.memory_mib}
    if needed.total_mib <= limit:
        return Fit("True", FITS, summary, **figures)
    remedy = _remedy(resolved, model, gpu_class, gpu_classes)
    return Fit("False", INSUFFICIENT_MEMORY, f"{summary}: {remedy}", **figures)


def _speed_problem(resolved: Resolved, gpu_class: GPUClass) -> str | None:
    """Why spec.speed cannot work with the resolved precision, class and sizes (the CRD checks what it can
    see: tf32 with spec.precision set; the precision the catalog fills in and the size limits are here)."""
    speed, precision, generation = resolved.spec.speed, resolved.precision, resolved.generation
    if speed is None:
        return None
    if speed.tf32 and precision != "fp32":
        return (f"spec.speed.tf32 needs fp32, and the replicas run {precision} (the model's preferred precision, "
                "spec.precision left out): set spec.precision fp32 or drop spec.speed.tf32")
    if speed.tf32 and gpu_class.device != "cuda":
        return f"spec.speed.tf32 needs a CUDA GPU and {gpu_class.name} runs on {gpu_class.device}: drop it"
    for size in speed.compile_sizes or ():
        width, height = (int(side) for side in size.split("x"))
        if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            return f"spec.speed.compileSizes: {size} is not a multiple of {SIZE_MULTIPLE} on each side"
        if width > generation.max_width or height > generation.max_height:
            return (f"spec.speed.compileSizes: {size} is above the largest size {generation.max_width}x"
                    f"{generation.max_height} (spec.generation.maxWidth x maxHeight, or the model's): raise those "
                    "or drop the size")
    return None


def _remedy(resolved: Resolved, model: ModelInfo, gpu_class: GPUClass, gpu_classes: dict[str, GPUClass]) -> str:
    """What would make it fit, the most local change first."""
    generation, precision = resolved.generation, resolved.precision
    width, height, batch = generation.max_width, generation.max_height, resolved.batching.max_batch_size
    limit = usable_mib(gpu_class)
    options = []
    largest = _largest_batch(model, precision, width, height, limit)
    if 0 < largest < batch:
        options.append(f"spec.batching.maxBatchSize {largest}")
    if precision == "fp32":
        for other_precision in gpu_class.precisions:
            if (
                other_precision != "fp32"
                and other_precision in model.precision.supported
                and estimate(model, other_precision, batch, width, height).total_mib <= limit
            ):
                options.append(f"spec.precision {other_precision}")
                break
    classes = [
        name for name, other in gpu_classes.items()
        if precision in other.precisions
        and estimate(model, precision, batch, width, height).total_mib <= usable_mib(other)
    ]
    if classes:
        options.append(f"spec.gpuClass {' or '.join(classes)}")
    if not options:
        return "no single change makes it fit; lower the precision, the batch size and the image size"
    return "it would fit with " + ", or ".join(options)
