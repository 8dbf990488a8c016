"""The gateway's errors, answered in OpenAI's error shape ({"error": {"message", "type", "param", "code"}}),
the same shape and codes as the runtime's, so the official client raises the matching exception."""

from __future__ import annotations

import math
from typing import Any, ClassVar


class GatewayError(Exception):
    """An error a client can act on; subclasses fix the HTTP status and the `type`."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str = "internal",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(GatewayError):
    status = 422
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class Gone(GatewayError):
    """The model a waiting request was for was deleted before a pod took it."""

    status = 410
    type = "invalid_request_error"


class TooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"


class Shed(GatewayError):
    """Every pod of the route is saturated (429 with Retry-After)."""

    status = 429
    type = "rate_limit_error"


class Unavailable(GatewayError):
    """No pod came up in time, or too many requests are held (503 with Retry-After)."""

    status = 503
    type = "service_unavailable"


class BadGateway(GatewayError):
    """The pod failed after it got the request; the gateway does not send a generation twice."""

    status = 502
    type = "server_error"
