"""HTTP to the runtime pods: forwarding generations, and polling each pod's GET /v1/load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BadGateway
from .picking import PodLoad, ResidentAnswer

logger = logging.getLogger(__name__)

LOAD_PATH = "/v1/load"
GENERATE_PATH = "/v1/images/generations"
POLL_TIMEOUT_SECONDS = 0.5
# A /v1/load answer is ~150 bytes, a pool pod's with what is resident a few KiB (its budgets bound
# the names); more is a broken or hostile pod.
MAX_LOAD_BYTES = 65536
IDENTITY = {"accept-encoding": "identity"}
# The poller is unhealthy (readiness fails) when no round completed within this many intervals.
STALE_ROUNDS = 20
STALE_MIN_SECONDS = 5.0
# Pod answers that say the generation did not run: safe to send to another pod. A broken pod
# (`out_of_service`: a sticky device error or a hung call) answers it to what it had queued and to
# what arrives; a batch it had in hand produced no image for anyone.
NOT_TAKEN_CODES = frozenset({"queue_full", "not_ready", "draining", "out_of_service"})


class NotSent(Exception):
    """The pod never took the request: it is gone or leaving (connection refused, not ready, draining),
    or its queue was full (`saturated`)."""

    def __init__(self, message: str, *, saturated: bool = False) -> None:
        super().__init__(message)
        self.saturated = saturated


class LoadAnswer(BaseModel):
    """The fields of a pod's GET /v1/load the picker uses, checked (extra fields are ignored)."""

    model_config = ConfigDict(strict=True)

    ready: bool
    queued: int = Field(ge=0)
    running: int = Field(ge=0)
    queue_limit: int = Field(ge=0)
    max_batch_size: int = Field(ge=1)
    batch_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    resident: ResidentAnswer | None = None  # pool pods


class Vanished(Exception):
    """The pod took the request and closed the connection before any byte of an answer: it died
    (its node deleted, its process killed). Nobody received an image, so making it again elsewhere
    is safe; the caller bounds how often."""


class Upstream:
    def __init__(self, *, generation_timeout: float) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=1.0, read=generation_timeout, write=5.0, pool=1.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def generate(self, url: str, body: bytes) -> httpx.Response:
        """The pod's answer. NotSent when it never ran the request (another pod may); Vanished when the
        pod died holding it, with no answer; BadGateway when the exchange broke otherwise (a timeout:
        the pod may still be generating, so it is never sent twice)."""
        try:
            response = await self._client.post(url + GENERATE_PATH, content=body,
                                               headers={"content-type": "application/json"})
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise NotSent(f"{url}: {error!r}") from error
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            # No status line came back (a status line would have made this a response).
            raise Vanished(f"{url}: {error!r}") from error
        except httpx.HTTPError as error:
            raise BadGateway(f"the pod failed while generating ({type(error).__name__}); the request may have "
                             "run, so it was not retried", code="upstream_failed") from error
        code = _error_code(response) if response.status_code in (429, 503) else None
        if code in NOT_TAKEN_CODES:
            raise NotSent(f"{url}: {response.status_code} {code}", saturated=code == "queue_full")
        return response

    async def poll(self, url: str) -> PodLoad | None:
        """The pod's load, or None (unknown) for any answer but a well-formed one of at most
        MAX_LOAD_BYTES within POLL_TIMEOUT_SECONDS in all: a broken or hostile pod cannot stop or stall
        the poller, or grow the gateway's memory."""
        try:
            async with (asyncio.timeout(POLL_TIMEOUT_SECONDS),
                        self._client.stream("GET", url + LOAD_PATH, headers=IDENTITY) as response):
                if response.status_code != 200:
                    return None
                body = bytearray()
                async for chunk in response.aiter_raw():  # as sent: no decompression bomb
                    body += chunk
                    if len(body) > MAX_LOAD_BYTES:
                        return None
            answer = LoadAnswer.model_validate_json(bytes(body))
        except (httpx.HTTPError, ValidationError, TimeoutError):
            return None
        return PodLoad(ready=answer.ready, queued=answer.queued, running=answer.running,
                       queue_limit=answer.queue_limit, max_batch_size=answer.max_batch_size,
                       batch_seconds=answer.batch_seconds, observed_at=time.monotonic(),
                       resident=answer.resident.load() if answer.resident else None)


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


class LoadPoller:
    """Polls every ready pod's load every `interval` seconds (and a new pod at once, via `kick`).

    `run` supervises the rounds: one that fails is logged and the next starts after an interval, so
    nothing a pod answers stops the polling. `healthy` is False when no round completed lately (the
    task died or hangs), and the gateway's readiness follows it.
    """

    def __init__(self, upstream: Upstream, urls: Callable[[], Iterable[str]], loads: dict[str, PodLoad],
                 on_change: Callable[[], None], interval: float) -> None:
        self._upstream = upstream
        self._urls = urls
        self._loads = loads
        self._on_change = on_change
        self._interval = interval
        self._kick = asyncio.Event()
        self._last_round: float | None = None

    def kick(self) -> None:
        self._kick.set()

    def healthy(self, now: float | None = None) -> bool:
        """Whether a round completed within max(STALE_ROUNDS intervals, STALE_MIN_SECONDS)."""
        if self._last_round is None:
            return False
        stale_after = max(STALE_ROUNDS * self._interval, STALE_MIN_SECONDS)
        return (time.monotonic() if now is None else now) - self._last_round <= stale_after

    async def run(self) -> None:
        while True:
            self._kick.clear()
            try:
                await self._round()
                self._last_round = time.monotonic()
            except Exception:  # noqa: BLE001 - logged; the next round starts over
                logger.exception("a load poll round failed; polling again in %.2fs", self._interval)
            try:
                await asyncio.wait_for(self._kick.wait(), self._interval)
            except TimeoutError:
                pass

    async def _round(self) -> None:
        urls = sorted(self._urls())
        results = await asyncio.gather(*(self._upstream.poll(url) for url in urls), return_exceptions=True)
        changed = False
        for url, load in zip(urls, results, strict=True):
            if isinstance(load, BaseException):
                logger.warning("polling %s failed: %r; its load is unknown", url, load)
                load = None
            if load is None:  # unknown this round: its last load goes stale (see picking.fresh)
                continue
            previous = self._loads.get(url)
            changed |= previous is None or previous.ready != load.ready or previous.queued != load.queued
            self._loads[url] = load
        for gone in set(self._loads) - set(urls):
            del self._loads[gone]
        if changed:
            self._on_change()
