"""Request and response bodies of the HTTP API (OpenAI's images API plus a few diffusion knobs)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .encoding import OutputFormat

MAX_PROMPT_CHARS = 4000
MAX_IMAGES_PER_REQUEST = 10  # OpenAI's own bound for `n`
MAX_GUIDANCE_SCALE = 30.0
MAX_SEED = 2**63 - 1
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


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


class ImageData(BaseModel):
    b64_json: str = Field(description="the image in the response's output_format, base64-encoded")
    seed: int = Field(description="the seed that reproduces this image")


class GenerationResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: OutputFormat


class ModelCard(BaseModel):
    """OpenAI's model object, plus what serves it (clients ignore the extra fields)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "imagefleet"
    engine: str = Field(description="diffusers, or emulated: a stand-in that takes a real card's time")
    emulated: bool
    gpu_class: str | None = Field(description="the GPU class the pod runs on, or stands in for when emulated")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    """Body of /healthz and /readyz."""

    status: str
    model: str
    detail: str | None = None


class Load(BaseModel):
    """Body of GET /v1/load: what the gateway's picker polls, cheaper than parsing /metrics."""

    ready: bool
    queued: int = Field(description="images waiting, not yet in a batch (the unit of queue_limit)")
    running: int = Field(description="requests in the batch being collected or run")
    queue_limit: int = Field(description="images that may wait; a request that would pass it gets 429")
    max_batch_size: int
    batch_seconds: float | None = Field(description="running average of one pipeline call; null until loaded")
