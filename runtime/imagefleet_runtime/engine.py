"""One pipeline call for a batch of images: per-image seeds in, PNG bytes out."""

from __future__ import annotations

import inspect
import io
import time
from collections.abc import Sequence
from typing import Any

import torch

from .batcher import BatchKey, ImageSpec
from .engines import WARM_UP_STEPS
from .errors import OutOfMemory


class PipelineEngine:
    """Runs a diffusers text-to-image pipeline; only ever called from the batcher's one thread."""

    def __init__(self, pipeline: Any, device: torch.device) -> None:
        self.pipeline = pipeline
        self.device = device
        self.summary = f"diffusers on {device}"
        self._takes_negative_prompt = "negative_prompt" in inspect.signature(pipeline.__call__).parameters
        # Latents are the image divided by the VAE's factor; transformer models then patch them by 2.
        patch = 2 if getattr(pipeline, "transformer", None) is not None else 1
        scale = int(getattr(pipeline, "vae_scale_factor", 8))
        self.size_multiple = max(8, scale * patch)
        # SDXL, SD3 and FLUX pipelines say their native latent size; UNet-only ones keep it in the UNet config.
        latent = getattr(pipeline, "default_sample_size", None) or pipeline.unet.config.sample_size
        self.native_size = int(latent) * scale

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        # CPU generators, one per image: the same seed gives the same starting noise on any
        # device and in any batch, and each image's noise does not depend on its neighbours.
        options: dict[str, Any] = {
            "prompt": [image.prompt for image in images],
            "num_inference_steps": key.steps,
            "guidance_scale": key.guidance_scale,
            "width": key.width,
            "height": key.height,
            "generator": [torch.Generator().manual_seed(image.seed) for image in images],
            "output_type": "pil",
        }
        # "" is what the pipelines use for a missing negative prompt, so mixing is safe.
        if self._takes_negative_prompt and any(image.negative_prompt for image in images):
            options["negative_prompt"] = [image.negative_prompt or "" for image in images]
        try:
            with torch.inference_mode():
                output = self.pipeline(**options)
        except torch.OutOfMemoryError as error:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"{len(images)} image(s) of {key.width}x{key.height} do not fit in the accelerator's memory: {error}"
            ) from error
        return [_png(image) for image in output.images]

    def warm_up(self, key: BatchKey) -> float:
        """Run one short generation (kernels, allocator, caches) and estimate one call at `key`, in seconds."""
        steps = min(key.steps, WARM_UP_STEPS)
        started = time.monotonic()
        self.generate(BatchKey(key.width, key.height, steps, key.guidance_scale), [ImageSpec("warm-up", None, 0)])
        return (time.monotonic() - started) * key.steps / steps


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
