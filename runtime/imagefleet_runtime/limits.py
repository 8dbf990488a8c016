"""A bound on request bodies: 413 once a body passes it, before it is read whole.

An ASGI middleware, so the bound holds below FastAPI's body parsing: a Content-Length above the
bound is answered at once, without reading a byte of the body; a chunked body is counted as it
arrives and answered as soon as it passes the bound. Either way the connection is then closed
(the rest of the body is never read), so memory stays flat however large the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTooLarge, error_body


class BodyLimit:
    """Wraps the app: bodies above `max_bytes` get a 413 in the OpenAI error shape."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, on_refused: Callable[[BodyTooLarge], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the body declares {int(declared)} bytes")
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await self._refuse(send, f"more than {self.max_bytes} bytes arrived")
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:  # after a refusal, the app's complaint about the cut-off body is moot
                raise

    async def _refuse(self, send: Send, what: str) -> None:
        error = BodyTooLarge(
            f"request body too large: {what}; this server takes at most {self.max_bytes} bytes (max_request_bytes)"
        )
        self.on_refused(error)
        body = json.dumps(error_body(error)).encode()
        await send({
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})
