"""Turn settings into a ready diffusers pipeline on the chosen device and dtype."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline

from ..errors import ModelLoadError
from ..settings import Device, Precision, Settings
from .builtin import BUILDERS
from .manifest import read_manifest

logger = logging.getLogger(__name__)

# Catalog names (the CRD's spec.model.name) of real models -> Hugging Face repo ids.
CATALOG: dict[str, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd35-medium": "stabilityai/stable-diffusion-3.5-medium",
    "sd35-large": "stabilityai/stable-diffusion-3.5-large",
    "flux1-schnell": "black-forest-labs/FLUX.1-schnell",
    "flux1-dev": "black-forest-labs/FLUX.1-dev",
}
DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device is cuda but torch (built for CUDA {torch.version.cuda}) sees no CUDA GPU: on a GPU node, check "
            "that the pod got a GPU (nvidia.com/gpu) and that the node's NVIDIA driver runs that CUDA (CUDA 13 needs "
            "driver >= 580; see docs/runtime.md, Driver); else use --device cpu or auto"
        )
    return torch.device(device)


def load_pipeline(settings: Settings) -> tuple[Any, torch.device]:
    """The pipeline for `settings.model`, moved to its device and dtype, progress bars off."""
    device = resolve_device(settings.device)
    dtype = DTYPES[settings.precision]
    builder = BUILDERS.get(settings.model)
    if builder is not None:
        pipeline = builder().to(device)
        if dtype != torch.float32:
            pipeline = pipeline.to(dtype=dtype)
    else:
        pipeline = _from_pretrained(settings, dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, device


def _from_pretrained(settings: Settings, dtype: torch.dtype) -> Any:
    """Load with diffusers; the pipeline class comes from the model's model_index.json.

    A MODEL_PATH holding a diffusers folder (model_index.json) is loaded as is (in the variant
    a model cache's manifest names); any other
    MODEL_PATH is used as the Hugging Face cache directory for the repo id.
    """
    source: str | Path = CATALOG.get(settings.model, settings.model)
    options: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": settings.offline}
    if settings.model_revision is not None:
        options["revision"] = settings.model_revision
    if settings.model_path is not None:
        if (settings.model_path / "model_index.json").is_file():
            source = settings.model_path
            # A folder `imagefleet-runtime download` filled: load the weights variant it fetched.
            manifest = read_manifest(settings.model_path)
            if manifest is not None and manifest.get("variant"):
                options["variant"] = manifest["variant"]
        else:
            options["cache_dir"] = settings.model_path
    logger.info("loading %s (%s)", source, ", ".join(f"{k}={v}" for k, v in options.items()))
    try:
        try:
            return AutoPipelineForText2Image.from_pretrained(source, **options)
        except ValueError as error:
            if "AutoPipeline can't find a pipeline" not in str(error):
                raise
            return DiffusionPipeline.from_pretrained(source, **options)
    except Exception as error:  # noqa: BLE001 - re-raised with what to check
        hint = (
            f"built-in models: {', '.join(sorted(BUILDERS))}; catalog: {', '.join(sorted(CATALOG))}; "
            "or a Hugging Face repo id / local diffusers folder"
        )
        where = "offline, from the local cache only" if settings.offline else "from the Hub or the local cache"
        raise ModelLoadError(f"cannot load model {settings.model!r} ({source}) {where}: {error}. {hint}") from error
