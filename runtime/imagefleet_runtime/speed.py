"""Speed options of the diffusers engine: channels-last, fused QKV projections, TF32 and torch.compile.

Applied once after loading, before the warm-up (which, with compile, compiles every allowed size).
benchmarks/gpu_runtime.py measures each through `apply_to_denoiser` too, so the figures there are
those of the code that serves.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .errors import ModelLoadError
from .settings import SPEED_OPTIONS, Precision, Settings

logger = logging.getLogger(__name__)

# Autotuned kernels without CUDA graphs: graphs would be recorded per batch size and size bucket and
# pin their memory; the benchmark measures this mode.
COMPILE_MODE = "max-autotune-no-cudagraphs"


def tf32_applies(device_type: str, precision: Precision) -> bool:
    """TF32 changes only fp32 matmuls and convolutions on CUDA."""
    return device_type == "cuda" and precision == "fp32"


def denoiser_of(pipeline: Any) -> torch.nn.Module:
    """The pipeline's UNet, or its transformer (SD 3.5, FLUX)."""
    return getattr(pipeline, "unet", None) or pipeline.transformer


def set_tf32(enabled: bool) -> None:
    """Process-wide: cuBLAS matmuls and cuDNN convolutions in fp32 may use TF32 tensor cores."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def apply_to_denoiser(
    denoiser: torch.nn.Module, *, channels_last: bool, fuse_qkv: bool, compile: bool
) -> torch.nn.Module:
    """Fuse, reformat, then compile (in that order: compile traces the final module), in place."""
    if fuse_qkv:
        if not hasattr(denoiser, "fuse_qkv_projections"):
            raise ModelLoadError(
                f"fuse_qkv: diffusers offers no fuse_qkv_projections for {type(denoiser).__name__}; drop --fuse-qkv"
            )
        denoiser.fuse_qkv_projections()
    if channels_last:
        denoiser.to(memory_format=torch.channels_last)
    if compile:
        # Dynamic shapes as torch decides them: the warm-up's calls at several batch sizes mark the batch
        # dimension dynamic, so a batch of another size reuses the compiled graph (engines.warm_up_plan).
        denoiser.compile(mode=COMPILE_MODE)
    return denoiser


def apply_speed(pipeline: Any, device: torch.device, settings: Settings) -> list[str]:
    """Apply the settings' speed options to a loaded pipeline; return what was applied, for the log.

    The VAE gets channels-last and fused QKV too (it is convolutions and one attention block); it is
    not compiled: it runs once per image, not once per step.
    """
    if settings.tf32 and not tf32_applies(device.type, settings.precision):
        raise ModelLoadError(f"tf32 needs precision fp32 on cuda, and this server runs {settings.precision} on "
                             f"{device.type}: drop --tf32 (IMAGEFLEET_TF32)")
    if settings.tf32:  # off: torch's defaults stand (fp32 matmuls in full fp32; cuDNN may pick TF32 convolutions)
        set_tf32(True)
    apply_to_denoiser(
        denoiser_of(pipeline), channels_last=settings.channels_last, fuse_qkv=settings.fuse_qkv,
        compile=settings.compile,
    )
    vae = getattr(pipeline, "vae", None)
    if vae is not None and settings.fuse_qkv and hasattr(vae, "fuse_qkv_projections"):
        vae.fuse_qkv_projections()
    if vae is not None and settings.channels_last:
        vae.to(memory_format=torch.channels_last)
    applied = [name for name in SPEED_OPTIONS if getattr(settings, name)]
    if applied:
        logger.info("speed options applied: %s", ", ".join(applied))
    return applied
