"""Catalogs: the models the operator knows and the GPU classes it can place them on."""

from .gpu_classes import CatalogError, GPUClass, Precision, load_gpu_classes, parse_gpu_classes
from .models import MODEL_NAMES, GenerationDefaults, ModelInfo, ModelName, model_catalog

__all__ = [
    "MODEL_NAMES",
    "CatalogError",
    "GPUClass",
    "GenerationDefaults",
    "ModelInfo",
    "ModelName",
    "Precision",
    "load_gpu_classes",
    "model_catalog",
    "parse_gpu_classes",
]
