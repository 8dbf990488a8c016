"""One pipeline call for a batch of images: per-image seeds in, PNG bytes out."""

from __future__ import annotations

import gc
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from .batcher import BatchKey, ImageSpec
from .encoding import encode_pil, pillow_formats
from .errors import ContentFiltered, DeviceFailure, OutOfMemory
from .memory import MemoryReading, process_memory

# Words of CUDA errors after which the context is unusable until the process restarts.
STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "an illegal instruction",
    "misaligned address",
    "uncorrectable ECC error",
    "CUDA error: unknown error",
)


class PipelineEngine:
    """Runs a diffusers text-to-image pipeline; only ever called from the batcher's one thread."""

    def __init__(self, pipeline: Any, device: torch.device) -> None:
        self.pipeline = pipeline
        self.device = device
        self.summary = f"diffusers on {device}"
        self.output_formats = pillow_formats()
        self._takes_negative_prompt = "negative_prompt" in inspect.signature(pipeline.__call__).parameters
        # Latents are the image divided by the VAE's factor; transformer models then patch them by 2.
        patch = 2 if getattr(pipeline, "transformer", None) is not None else 1
        scale = int(getattr(pipeline, "vae_scale_factor", 8))
        self.size_multiple = max(8, scale * patch)
        # SDXL, SD3 and FLUX pipelines say their native latent size; UNet-only ones keep it in the UNet config.
        latent = getattr(pipeline, "default_sample_size", None) or pipeline.unet.config.sample_size
        self.native_size = int(latent) * scale

    def encode(self, image: object, output_format: str) -> bytes:
        return encode_pil(image, output_format)

    def memory(self) -> MemoryReading:
        if self.device.type != "cuda":
            return process_memory()
        return MemoryReading(
            "cuda",
            torch.cuda.memory_allocated(self.device),
            torch.cuda.memory_reserved(self.device),
            torch.cuda.max_memory_allocated(self.device),
        )

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
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
        # Errors are raised after their `except` block: the caught one's traceback holds the call's tensors.
        out_of_memory: str | None = None
        try:
            with torch.inference_mode():
                output = self.pipeline(**options)
        except torch.OutOfMemoryError as error:
            out_of_memory = str(error)
        except RuntimeError as error:
            if not any(words in str(error) for words in STICKY_CUDA_ERRORS):
                raise
            raise DeviceFailure(str(error)) from None
        if out_of_memory is not None:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"{len(images)} image(s) of {key.width}x{key.height} do not fit in the accelerator's memory: "
                f"{out_of_memory}"
            )
        # The safety checker (SD 1.5 from the Hub) blacks out what it flags; the request gets a 400 instead.
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
        return [
            ContentFiltered(
                f"image {index} (seed {spec.seed}) was flagged by the model's safety checker; change the prompt",
                param="prompt",
            )
            if hit
            else image
            for index, (image, spec, hit) in enumerate(zip(output.images, images, flagged, strict=True))
        ]
