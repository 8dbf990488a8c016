"""The request body the gateway accepts: the runtime's own (imagefleet.images_api) plus OpenAI's
`quality`, which picks the tier; so a body the runtime refuses is refused here with the same 422
and field, before any pod is involved. The limits of a resource's `spec.generation` (largest size,
most steps) are checked against the route in `limits.check_generation`, and by the pod again.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ValidationError

from ..images_api import GenerationRequest
from .errors import InvalidRequest

# Fields the gateway consumes: the pod serves one model and one tier, so it never sees them.
GATEWAY_FIELDS = frozenset({"model", "quality"})
# Fields only the gateway sets, from a pool member's resource: a client never picks the weights a pod loads.
POOL_FIELDS = ("checkpoint", "adapters")


class GatewayRequest(GenerationRequest):
    """The runtime's request plus OpenAI's `quality`, which picks the tier."""

    quality: Literal["low", "medium", "high", "auto"] | None = None


def parse_request(raw: bytes) -> tuple[GatewayRequest, bytes]:
    """The validated request and the body to forward to a pod (without the gateway's fields);
    InvalidRequest names every bad field as the runtime does."""
    try:
        data: Any = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest("body: JSON decode error", param="body", code="invalid") from error
    except RecursionError as error:  # a body of 64 KiB can nest arrays deeper than the parser recurses
        raise InvalidRequest("body: JSON nested too deeply", param="body", code="invalid") from error
    for name in POOL_FIELDS:
        if isinstance(data, dict) and name in data:
            raise InvalidRequest(f"{name}: set by the gateway from the model's resource, not by a client; name the "
                                 "model in `model`", param=name, code="invalid")
    try:
        request = GatewayRequest.model_validate(data)
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
