"""The gateway's HTTP API (FastAPI): thin routes over `service.Gateway`.

Slow or oversized clients are cut off at the edge: a declared Content-Length over the limit is a
413 before any byte of the body is read, a streamed body is counted as it arrives, and the body
must arrive within a timeout (the header timeout is the server's, see `command.py`). A client that
disconnects cancels its request, held or in flight.

The API key is checked before anything else of a request is read, then its rate (a token bucket
per key) and the requests in flight (in all and per key), all before the body is read (`limits`).
A request refused before its body was read closes its connection, so a client cannot keep
connections open with bodies it never finishes. A request with an `Idempotency-Key` gets the first
answer to that key (`idempotency`). `/metrics` (every tenant's group names and traffic) is not on
this app: `create_metrics_app` serves it on a port of its own, which the chart opens to Prometheus
only. There are no /docs or /openapi.json (docs/gateway.md is the API).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ..disconnect import unless_disconnected
from ..servers import metrics_app
from .auth import ApiKey
from .errors import GatewayError, InvalidRequest, RequestTimeout, TooLarge
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import REPLAYED_HEADER, Answer
from .queue import DEADLINE_HEADER
from .service import Gateway

# Generation requests are small JSON: 2 prompts of 4,000 characters fit many times over.
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_SECONDS = 10.0
ACCESS_LOG = logging.getLogger("imagefleet.gateway.access")


def log_access(key: ApiKey | None, raw: bytes, status: int, seconds: float) -> None:
    """One line per generation request: the key's name (never the key), the model and quality the
    body named (repr: a client's newline cannot forge a line), the answer's status, the seconds taken."""
    if not ACCESS_LOG.isEnabledFor(logging.INFO):
        return
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        data = {}
    named = data if isinstance(data, dict) else {}
    ACCESS_LOG.info("key=%s model=%r quality=%r status=%d seconds=%.3f", "-" if key is None else key.name,
                    named.get("model"), named.get("quality"), status, seconds)


async def answer_once(gateway: Gateway, request: Request, raw: bytes, key: ApiKey | None) -> Answer:
    """The answer to a generation request; with an Idempotency-Key, the first answer to that key."""

    async def produce() -> Answer:
        response = await gateway.generate(raw, key, request.headers.get(DEADLINE_HEADER))
        return Answer(response.status_code, response.content,
                      tuple((k, v) for k, v in response.headers.items() if k.lower() == "retry-after"))

    idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idempotency_key is None:
        return await produce()
    return await gateway.answers.answer("" if key is None else key.name, idempotency_key, raw, produce)


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("Content-Length must be a number", param="body", code="invalid")
        if int(declared) > limit:
            raise TooLarge(f"the body is {declared} bytes; the limit is {limit}", param="body", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the body is over the limit of {limit} bytes", param="body",
                                   code="body_too_large")
                chunks.append(chunk)
    except TimeoutError as error:
        raise RequestTimeout(f"the body did not arrive within {timeout:.0f}s", param="body",
                             code="body_timeout") from error
    return b"".join(chunks)


def create_app(gateway: Gateway, *, ready: Callable[[], bool] = lambda: True,
               lifespan_hooks: tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout: float = BODY_TIMEOUT_SECONDS) -> FastAPI:
    """The app; `ready()` says when the watches have synced; `lifespan_hooks` start and stop the edges."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        if lifespan_hooks:
            await lifespan_hooks[0]()
        try:
            yield
        finally:
            if lifespan_hooks:
                await lifespan_hooks[1]()
            await gateway.stop()

    app = FastAPI(title="imagefleet-gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())

    def caller(request: Request) -> ApiKey | None:
        return None if gateway.keys is None else gateway.keys.identify(request.headers.get("authorization"))

    @app.exception_handler(GatewayError)
    async def handle(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, GatewayError)
        return error_response(error)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the watches have listed the resources and their endpoints, while the load poller runs."""
        if not ready():
            return JSONResponse({"status": "syncing"}, status_code=503)
        if not gateway.poller.healthy():
            return JSONResponse({"status": "load poller stalled"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        """The model groups (with their tiers) this caller may use."""
        data = [{"id": group, "object": "model", "created": started, "owned_by": "imagefleet", "tiers": list(tiers)}
                for group, tiers in gateway.model_groups(caller(request)).items()]
        return {"object": "list", "data": data}

    @app.post("/v1/images/generations")
    async def generate(request: Request) -> Response:
        started = time.monotonic()
        key: ApiKey | None = None
        raw = b""
        read = False
        status = 500
        try:
            key = caller(request)
            gateway.rate_limits.check(key, started)
            with gateway.serving.slot(key):
                raw = await read_body(request, max_body_bytes, body_timeout)
                read = True
                answer = await unless_disconnected(request, answer_once(gateway, request, raw, key))
            if answer is None:  # the client is gone; nobody reads this
                status = 499
                return Response(status_code=499)
            status = answer.status
            if (REPLAYED_HEADER, "true") in answer.headers:
                gateway.metrics.idempotent_replays.inc()
            return Response(answer.content, status_code=answer.status, media_type="application/json",
                            headers=dict(answer.headers))
        except GatewayError as error:
            status = error.status
            refused = error_response(error)
            if not read:  # refused before its body: the connection goes too, not kept for more of it
                refused.headers["connection"] = "close"
            return refused
        finally:
            gateway.metrics.key_requests.labels("-" if key is None else key.name, str(status)).inc()
            log_access(key, raw, status, time.monotonic() - started)

    return app


def create_metrics_app(gateway: Gateway) -> FastAPI:
    """GET /metrics alone, for a port that only Prometheus may reach."""
    return metrics_app("imagefleet-gateway-metrics", gateway.metrics.exposition)
