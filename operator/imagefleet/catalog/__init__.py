"""Catalogs: the models the operator knows and the GPU classes it can place them on."""

from .emulation import Anchor, ClassCost, EmulationTable, ModelCost, emulation_table
from .gpu_classes import CatalogError, GPUClass, Precision, load_gpu_classes, parse_gpu_classes
from .models import MODEL_NAMES, GenerationDefaults, ModelInfo, ModelName, model_catalog

__all__ = [
    "MODEL_NAMES",
    "Anchor",
    "CatalogError",
    "ClassCost",
    "EmulationTable",
    "GPUClass",
    "GenerationDefaults",
    "ModelCost",
    "ModelInfo",
    "ModelName",
    "Precision",
    "emulation_table",
    "load_gpu_classes",
    "model_catalog",
    "parse_gpu_classes",
]
