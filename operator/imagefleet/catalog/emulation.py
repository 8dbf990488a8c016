"""The emulated engine's cost table (emulation.yaml): published GPU timings, each with its source."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .gpu_classes import Precision
from .models import MODEL_NAMES


class _Entry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class LoadCost(_Entry):
    bandwidth_mib_per_second: float = Field(alias="bandwidthMiBPerSecond", gt=0)


class LoraCost(_Entry):
    """The fixed work of loading one LoRA adapter into a resident denoiser, on top of moving its bytes."""

    load_seconds: float = Field(ge=0)
    load_seconds_source: str


class ClassCost(_Entry):
    """How one GPU class scales the anchors."""

    # This class's time over the H100's for the same work; None: no figure scales to it.
    relative_time: float | None = Field(gt=0)
    relative_time_source: str
    # Each extra image in one call adds this fraction of a one-image call.
    batch_cost: float = Field(gt=0, le=1)
    batch_cost_source: str
    # fp32 time over fp16/bf16 time.
    fp32_factor: float = Field(gt=0)
    fp32_factor_source: str
    # Copy bandwidth between host RAM and the card (one direction); None: the device is the host.
    host_to_gpu_mib_per_second: float | None = Field(alias="hostToGpuMiBPerSecond", gt=0)
    host_to_gpu_source: str


class Anchor(_Entry):
    """One timing: a model on a class, batch 1, at a size, step count and precision."""

    gpu_class: str
    precision: Precision = "fp16"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    steps: int = Field(gt=0)
    seconds: float = Field(gt=0)
    kind: Literal["measured", "derived"]
    source: str


class ModelCost(_Entry):
    size_multiple: int = Field(gt=0)
    # Bound by per-call overhead, not compute: the first anchor holds on every class and precision.
    overhead_bound: bool = False
    anchors: tuple[Anchor, ...] = Field(min_length=1)
    # A typical LoRA adapter's weights for this family; None: no figure (the emulated engine refuses adapters).
    adapter_mib: float | None = Field(None, alias="adapterMiB", gt=0)
    adapter_mib_source: str | None = Field(None, alias="adapterMiBSource")


class EmulationTable(_Entry):
    load: LoadCost
    lora: LoraCost
    classes: dict[str, ClassCost]
    models: dict[str, ModelCost]

    @model_validator(mode="after")
    def _anchors_name_known_classes(self) -> EmulationTable:
        for name, model in self.models.items():
            if name not in MODEL_NAMES:
                raise ValueError(f"emulation.yaml: {name!r} is not a catalog model")
            for anchor in model.anchors:
                if anchor.gpu_class not in self.classes:
                    raise ValueError(f"emulation.yaml: {name} has an anchor on unknown class {anchor.gpu_class!r}")
        return self


@cache
def emulation_table() -> EmulationTable:
    """The built-in cost table."""
    text = resources.files(__package__).joinpath("emulation.yaml").read_text()
    return EmulationTable.model_validate(yaml.safe_load(text))
