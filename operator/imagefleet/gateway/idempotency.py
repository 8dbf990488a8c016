"""`Idempotency-Key`: a request sent again with the same key gets the first one's answer, not a
second generation (the official `openai` client retries resets and 5xx on its own; with
`extra_headers={"Idempotency-Key": ...}` its retries carry the key).

- A key belongs to the API key that sent it: two tenants' keys never meet.
- A repeat that arrives while the first request runs waits for it and gets its answer.
- An answer is kept for `window` seconds after it was given, and the answers kept take at most
  `max_bytes` in all (the oldest go first; one larger than that is not kept): bounded memory.
- A repeat with another body (compared as JSON: the order of fields does not matter) is a 422: the
  key was reused by mistake, and guessing which body was meant would be wrong.
- Only answers after which a pod may have run the request are kept (a pod's answer, a 502). The
  gateway's own refusals (4xx, a 429 shed, a 503 before any pod) say nothing ran: a repeat that
  waited gets the same refusal, a later one is a new request.
- When the first request's client leaves before its answer, the request is cancelled (work nobody
  reads is skipped) and a repeat that was waiting becomes the request.

The answers live in one gateway process: a repeat that reaches another replica, or arrives after
a restart, is a new request (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from .errors import BadGateway, GatewayError, InvalidRequest

HEADER = "Idempotency-Key"
# Set on an answer that was given before: the client can tell a replay from a new generation.
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
WINDOW_SECONDS = 600.0
MAX_BYTES = 64 * 2**20
# What one kept answer costs besides its content (its key, digest and bookkeeping), for the bound.
ENTRY_OVERHEAD_BYTES = 512
Owner = str  # the API key's name ("" when keys are off)


@dataclass(frozen=True)
class Answer:
    """An answer as the client gets it."""

    status: int
    content: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def replayed(self) -> Answer:
        return replace(self, headers=(*self.headers, (REPLAYED_HEADER, "true")))


@dataclass(eq=False)
class _Entry:
    body_digest: str
    done: asyncio.Future[Answer] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    expires: float = 0.0
    size: int = 0


def check_key(value: str) -> str:
    """The header's value, or InvalidRequest: 1 to MAX_KEY_CHARS visible ASCII characters."""
    if not 0 < len(value) <= MAX_KEY_CHARS or not all(33 <= ord(c) <= 126 for c in value):
        raise InvalidRequest(f"{HEADER} must be 1 to {MAX_KEY_CHARS} visible ASCII characters",
                             param=HEADER, code="invalid_idempotency_key")
    return value


def digest_of(body: bytes) -> str:
    """The body's digest, the same whatever the order of its JSON fields or its spacing (clients
    serialize differently); bytes that are not JSON as they are."""
    try:
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        pass
    return hashlib.sha256(body).hexdigest()


def keeps(error: GatewayError) -> bool:
    """Whether an error answer is kept: a 502 says the pod may have run the request."""
    return isinstance(error, BadGateway)


class IdempotentAnswers:
    """The answers of requests that carried an `Idempotency-Key`, per API key, within a window."""

    def __init__(self, window: float = WINDOW_SECONDS, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self._clock = clock
        self._running: dict[tuple[Owner, str], _Entry] = {}
        self._kept: OrderedDict[tuple[Owner, str], _Entry] = OrderedDict()  # oldest answer first
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    async def answer(self, owner: Owner, key: str, body: bytes, produce: Callable[[], Awaitable[Answer]]) -> Answer:
        """The answer of the first request `owner` sent with `key` (waiting for it while it runs),
        else `produce()`'s, kept for repeats."""
        slot = (owner, check_key(key))
        body_digest = digest_of(body)
        while True:
            self._expire()
            entry = self._kept.get(slot) or self._running.get(slot)
            if entry is None:
                return await self._produce(slot, body_digest, produce)
            if entry.body_digest != body_digest:
                raise InvalidRequest(f"this {HEADER} was sent before with another body; use a new key for a new "
                                     "request", param=HEADER, code="idempotency_key_reused")
            try:
                answer = await asyncio.shield(entry.done)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if entry.done.cancelled() and not (task is not None and task.cancelling()):
                    continue  # the first one's client left: this one is the request now
                raise
            return answer.replayed()

    async def _produce(self, slot: tuple[Owner, str], body_digest: str,
                       produce: Callable[[], Awaitable[Answer]]) -> Answer:
        entry = _Entry(body_digest)
        entry.done.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
        self._running[slot] = entry
        try:
            answer = await produce()
        except GatewayError as error:
            if not keeps(error):
                entry.done.set_exception(error)
                raise
            answer = Answer(error.status, error_content(error), tuple(error.headers().items()))
            self._keep(slot, entry, answer)
            raise
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                entry.done.cancel()
            else:
                entry.done.set_exception(error)
            raise
        finally:
            if self._running.get(slot) is entry:
                del self._running[slot]
        self._keep(slot, entry, answer)
        return answer

    def _keep(self, slot: tuple[Owner, str], entry: _Entry, answer: Answer) -> None:
        entry.done.set_result(answer)
        entry.size = len(answer.content) + len(slot[0]) + len(slot[1]) + ENTRY_OVERHEAD_BYTES
        if entry.size > self.max_bytes:
            return  # too large to keep; repeats that waited have it
        entry.expires = self._clock() + self.window
        self._kept[slot] = entry
        self.kept_bytes += entry.size
        self._expire()

    def _expire(self) -> None:
        """Drop answers past their window, then the oldest while over `max_bytes`."""
        now = self._clock()
        while self._kept:
            slot, oldest = next(iter(self._kept.items()))
            if oldest.expires > now and self.kept_bytes <= self.max_bytes:
                return
            del self._kept[slot]
            self.kept_bytes -= oldest.size


def error_content(error: GatewayError) -> bytes:
    return json.dumps(error.body()).encode()
