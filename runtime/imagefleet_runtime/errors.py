"""The runtime's error vocabulary and its one mapping to HTTP responses.

Bodies follow OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`), so
the official client raises the matching exception with our message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from imagefleet import metrics as names


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to change."""


class DeviceFailure(RuntimeError):
    """The accelerator is lost for this process (a sticky CUDA error): only a restart helps."""


class RuntimeAPIError(Exception):
    """An error a client can act on; subclasses fix the status and the `code`."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(RuntimeAPIError):
    """The request is malformed or outside the server's limits (422)."""

    status = 422
    type = "invalid_request_error"
    code = names.REJECT_INVALID


class NotInPool(RuntimeAPIError):
    """A pool field (checkpoint, adapters) sent to a runtime that is not in pool mode (400)."""

    status = 400
    type = "invalid_request_error"
    code = "not_a_pool"


class CheckpointRefused(RuntimeAPIError):
    """Pool mode: the checkpoint cannot be loaded (missing, not of the family, larger than the budget) (400)."""

    status = 400
    type = "invalid_request_error"
    code = "checkpoint_refused"


class AdapterRefused(RuntimeAPIError):
    """Pool mode: the adapter cannot be loaded (missing, corrupt, made for another base) (400)."""

    status = 400
    type = "invalid_request_error"
    code = "adapter_refused"


class QueueFull(RuntimeAPIError):
    """Too many requests are waiting (429); `retry_after` is the server's estimate in seconds."""

    status = 429
    type = "rate_limit_error"
    code = names.REJECT_QUEUE_FULL

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class NotReady(RuntimeAPIError):
    """The model is still loading or warming up (503)."""

    status = 503
    type = "service_unavailable"
    code = "not_ready"


class Draining(RuntimeAPIError):
    """The server is shutting down and accepts no new work (503)."""

    status = 503
    type = "service_unavailable"
    code = names.REJECT_DRAINING


class OutOfMemory(RuntimeAPIError):
    """Even a single image does not fit the accelerator's memory (503)."""

    status = 503
    type = "server_error"
    code = names.REJECT_OOM


class Broken(RuntimeAPIError):
    """The accelerator is out of service (sticky device error or a hung call); the pod is restarted (503)."""

    status = 503
    type = "service_unavailable"
    code = "out_of_service"


class PipelineFailed(RuntimeAPIError):
    """The pipeline raised something other than out-of-memory for this batch (500)."""

    status = 500
    type = "server_error"
    code = "pipeline_error"


class ContentFiltered(RuntimeAPIError):
    """The model's safety checker flagged an image of the request (400, as OpenAI answers a moderation block).

    The pipeline would return it blacked out; the API never returns that black image with a 200.
    """

    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"


class BodyTooLarge(RuntimeAPIError):
    """The request body is above the server's bound (413)."""

    status = 413
    type = "invalid_request_error"
    code = "body_too_large"


def error_body(error: RuntimeAPIError) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def from_validation_error(error: RequestValidationError) -> InvalidRequest:
    """Turn pydantic's error list into one message that names every bad field."""
    problems: list[str] = []
    params: list[str] = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ()) if part != "body"]
        field = "body" if item.get("type") == "json_invalid" else ".".join(location) or "body"
        params.append(field)
        message = str(item.get("msg", "invalid"))
        problems.append(f"{field}: {message}")
    return InvalidRequest("; ".join(problems) or "invalid request body", param=params[0] if params else None)


def install_handlers(app: FastAPI, on_error: Callable[[RuntimeAPIError], None]) -> None:
    """Answer every RuntimeAPIError (and FastAPI's own validation errors) in one shape.

    `on_error` sees each error before it is answered (the metrics count rejections there).
    """

    async def handle_runtime_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RuntimeAPIError)
        on_error(error)
        return JSONResponse(error_body(error), status_code=error.status, headers=error.headers())

    async def handle_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return await handle_runtime_error(request, from_validation_error(error))

    app.add_exception_handler(RuntimeAPIError, handle_runtime_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
