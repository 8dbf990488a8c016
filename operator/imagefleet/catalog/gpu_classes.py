"""The GPU class catalog: the operator's configuration of what each class is and how to land on it."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

Precision = Literal["fp16", "bf16", "fp32"]

DEFAULT_FILE = "gpu_classes.yaml"


class CatalogError(ValueError):
    """The GPU class catalog file is missing or malformed."""


class GPUClass(BaseModel):
    """One GPU class: the card, the precisions it runs and where its nodes are."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    device: Literal["cpu", "cuda"]
    memory_mib: int = Field(alias="memoryMiB", gt=0)
    precisions: tuple[Precision, ...] = Field(min_length=1)
    # The extended resource requesting the card; None for CPU-only classes.
    gpu_resource: str | None = None
    gpus_per_replica: int = Field(1, ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    # Kubernetes ResourceRequirements of the runtime container (requests, limits).
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _only_requests_and_limits(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = set(value) - {"requests", "limits"}
        if unknown:
            raise ValueError(f"resources may hold only 'requests' and 'limits', not {sorted(unknown)}")
        return value


class _Catalog(BaseModel):
    classes: list[GPUClass] = Field(min_length=1)


def parse_gpu_classes(text: str, source: str) -> dict[str, GPUClass]:
    """The classes described by YAML `text`; `source` names it in errors."""
    try:
        classes = _Catalog.model_validate(yaml.safe_load(text)).classes
    except (yaml.YAMLError, ValidationError) as error:
        raise CatalogError(f"GPU class catalog {source} is invalid: {error}") from error
    catalog = {gpu_class.name: gpu_class for gpu_class in classes}
    if len(catalog) != len(classes):
        raise CatalogError(f"GPU class catalog {source} names a class more than once")
    return catalog


@cache
def _builtin_gpu_classes() -> dict[str, GPUClass]:
    return parse_gpu_classes(resources.files(__package__).joinpath(DEFAULT_FILE).read_text(), "(built-in)")


def load_gpu_classes(path: Path | None = None) -> dict[str, GPUClass]:
    """The classes from `path` (IMAGEFLEET_GPU_CLASSES_FILE), or the built-in catalog (parsed once: the
    reconciler's drain-time estimate reads it on every reconcile)."""
    if path is None:
        return dict(_builtin_gpu_classes())
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise CatalogError(f"cannot read the GPU class catalog {path} ({error.strerror})") from error
    return parse_gpu_classes(text, str(path))
