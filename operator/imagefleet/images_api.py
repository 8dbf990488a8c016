"""The body of POST /v1/images/generations (OpenAI's images API plus a few diffusion knobs):
the one definition the runtime serves and the gateway checks before any pod is involved.

Plain pydantic, so the operator package (the gateway) and the runtime both import it.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PROMPT_CHARS = 4000
MAX_IMAGES_PER_REQUEST = 10  # OpenAI's own bound for `n`
MAX_GUIDANCE_SCALE = 30.0
MAX_SEED = 2**63 - 1
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MAX_ADAPTERS_PER_REQUEST = 8
MAX_SOURCE_CHARS = 1024  # a Hugging Face repo id, a catalog name or a path a pod can read
MAX_ADAPTER_SCALE = 10.0


class CheckpointSpec(BaseModel):
    """Pool mode: the weights to run on (a catalog name, a Hugging Face repo id or a directory the pod reads)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    revision: str | None = Field(None, min_length=1, max_length=MAX_SOURCE_CHARS)


class AdapterSpec(BaseModel):
    """Pool mode: a LoRA adapter (a Hugging Face repo id or a path the pod reads), one file of it, its scale."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    weight_name: str | None = Field(None, min_length=1, max_length=MAX_SOURCE_CHARS)
    scale: float = Field(1.0, ge=-MAX_ADAPTER_SCALE, le=MAX_ADAPTER_SCALE)


class GenerationRequest(BaseModel):
    """Body of POST /v1/images/generations; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(None, description="if given, must name the served model")
    n: int = Field(1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    size: str | None = Field(None, description='"WIDTHxHEIGHT", e.g. "512x512"; the server default if omitted')
    response_format: Literal["b64_json"] = "b64_json"
    output_format: OutputFormat = Field("png", description="png, jpeg or webp, as OpenAI's images API")
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE_SCALE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="image i of the request uses seed + i")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    # Set by the gateway for a pool's members; a runtime not in pool mode answers 400 when they are set.
    checkpoint: CheckpointSpec | None = Field(None, description="pool mode: the checkpoint; the pool's base if omitted")
    adapters: list[AdapterSpec] = Field(
        default_factory=list, max_length=MAX_ADAPTERS_PER_REQUEST, description="pool mode: LoRA adapters to apply"
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain text, not only whitespace")
        return value

    @field_validator("size")
    @classmethod
    def _size_shape(cls, value: str | None) -> str | None:
        if value is not None and not SIZE_PATTERN.match(value):
            raise ValueError(f'must look like "512x512" (WIDTHxHEIGHT), got {value!r}')
        return value

    def dimensions(self) -> tuple[int, int] | None:
        """(width, height) asked for, or None for the server default."""
        if self.size is None:
            return None
        match = SIZE_PATTERN.match(self.size)
        assert match is not None  # checked by the validator
        return int(match.group(1)), int(match.group(2))
