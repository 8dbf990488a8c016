"""The model catalog: the built-in models and what their pipelines hold in memory."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .gpu_classes import Precision

# The built-in catalog names, in the order the CRD and the docs list them.
ModelName = Literal["tiny", "sd15", "sdxl", "sd35-medium", "sd35-large", "flux1-schnell", "flux1-dev"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)


class _Entry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class GenerationDefaults(_Entry):
    """The model authors' recommended generation settings and sensible size limits."""

    steps: int = Field(ge=1)
    guidance_scale: float = Field(ge=0)
    width: int = Field(gt=0, multiple_of=8)
    height: int = Field(gt=0, multiple_of=8)
    max_width: int = Field(gt=0, multiple_of=8)
    max_height: int = Field(gt=0, multiple_of=8)


class PrecisionPolicy(_Entry):
    """Which precisions a model runs in, which it prefers, and why the others are refused."""

    preferred: Precision
    supported: tuple[Precision, ...] = Field(min_length=1)
    # precision -> why the model breaks in it (the operator refuses it with this reason)
    refused: dict[Precision, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PrecisionPolicy:
        if self.preferred not in self.supported:
            raise ValueError(f"preferred {self.preferred} is not among supported {self.supported}")
        if set(self.refused) & set(self.supported):
            raise ValueError("a precision cannot be both supported and refused")
        return self


class ModelInfo(_Entry):
    """One catalog model: its Hugging Face repo and the size of each pipeline component."""

    name: str
    description: str
    repo_id: str | None
    # component name -> billions of parameters
    components: dict[str, float]
    activation_gib_per_megapixel: float = Field(alias="activationGiBPerMegapixel", gt=0)
    # Extra working memory per megapixel when the pipeline decodes with its VAE upcast to fp32 at fp16.
    fp32_vae_upcast_gib_per_megapixel: float = Field(0.0, alias="fp32VaeUpcastGiBPerMegapixel", ge=0)
    precision: PrecisionPolicy
    defaults: GenerationDefaults

    @property
    def parameters_billions(self) -> float:
        return sum(self.components.values())


class _Catalog(BaseModel):
    models: list[ModelInfo]


@cache
def model_catalog() -> dict[str, ModelInfo]:
    """The built-in models by name."""
    text = resources.files(__package__).joinpath("models.yaml").read_text()
    models = _Catalog.model_validate(yaml.safe_load(text)).models
    catalog = {model.name: model for model in models}
    if tuple(catalog) != MODEL_NAMES:
        raise RuntimeError(f"models.yaml lists {tuple(catalog)}, expected {MODEL_NAMES}")
    return catalog
