"""The request body the gateway accepts: the runtime's (runtime/imagefleet_runtime/schemas.py, which
the operator package may not import) plus OpenAI's `quality`, which picks the tier.

A test holds the two models to the same answers, so a body the runtime refuses is refused here
with the same 422 and field, before any pod is involved. Limits that depend on a pod's settings
(largest size, most steps) stay with the pod: it checks them before queueing, without the GPU.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidRequest

MAX_PROMPT_CHARS = 4000
MAX_IMAGES_PER_REQUEST = 10
MAX_GUIDANCE_SCALE = 30.0
MAX_SEED = 2**63 - 1
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# Fields the gateway consumes: the pod serves one model and one tier, so it never sees them.
GATEWAY_FIELDS = frozenset({"model", "quality"})


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    quality: Literal["low", "medium", "high", "auto"] | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    size: str | None = None
    response_format: Literal["b64_json"] = "b64_json"
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE_SCALE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
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


def parse_request(raw: bytes) -> tuple[GenerationRequest, bytes]:
    """The validated request and the body to forward to a pod (without the gateway's fields);
    InvalidRequest names every bad field as the runtime does."""
    try:
        data: Any = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest("body: JSON decode error", param="body", code="invalid") from error
    try:
        request = GenerationRequest.model_validate(data)
    except ValidationError as error:
        problems: list[str] = []
        params: list[str] = []
        for item in error.errors():
            field = ".".join(str(part) for part in item.get("loc", ())) or "body"
            params.append(field)
            problems.append(f"{field}: {item.get('msg', 'invalid')}")
        raise InvalidRequest("; ".join(problems), param=params[0], code="invalid") from error
    forwarded = {key: value for key, value in data.items() if key not in GATEWAY_FIELDS}
    return request, json.dumps(forwarded).encode()
