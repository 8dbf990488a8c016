"""HTTP to the runtime pods: forwarding generations, and polling each pod's GET /v1/load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx

from .errors import BadGateway
from .picking import PodLoad

logger = logging.getLogger(__name__)

LOAD_PATH = "/v1/load"
GENERATE_PATH = "/v1/images/generations"
POLL_TIMEOUT_SECONDS = 0.5
# Pod answers that say the generation did not run: safe to send to another pod.
NOT_TAKEN_CODES = frozenset({"queue_full", "not_ready", "draining"})


class NotSent(Exception):
    """The pod never took the request: it is gone or leaving (connection refused, not ready, draining),
    or its queue was full (`saturated`)."""

    def __init__(self, message: str, *, saturated: bool = False) -> None:
        super().__init__(message)
        self.saturated = saturated


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
        try:
            response = await self._client.get(url + LOAD_PATH, timeout=POLL_TIMEOUT_SECONDS)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        return PodLoad(ready=bool(data["ready"]), queued=int(data["queued"]), running=int(data["running"]),
                       queue_limit=int(data["queue_limit"]), max_batch_size=int(data["max_batch_size"]),
                       batch_seconds=data.get("batch_seconds"), observed_at=time.monotonic())


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


class LoadPoller:
    """Polls every ready pod's load every `interval` seconds (and a new pod at once, via `kick`)."""

    def __init__(self, upstream: Upstream, urls: Callable[[], Iterable[str]], loads: dict[str, PodLoad],
                 on_change: Callable[[], None], interval: float) -> None:
        self._upstream = upstream
        self._urls = urls
        self._loads = loads
        self._on_change = on_change
        self._interval = interval
        self._kick = asyncio.Event()

    def kick(self) -> None:
        self._kick.set()

    async def run(self) -> None:
        while True:
            self._kick.clear()
            urls = sorted(self._urls())
            results = await asyncio.gather(*(self._upstream.poll(url) for url in urls))
            changed = False
            for url, load in zip(urls, results, strict=True):
                if load is not None:
                    previous = self._loads.get(url)
                    changed |= previous is None or previous.ready != load.ready or previous.queued != load.queued
                    self._loads[url] = load
            for gone in set(self._loads) - set(urls):
                del self._loads[gone]
            if changed:
                self._on_change()
            try:
                await asyncio.wait_for(self._kick.wait(), self._interval)
            except TimeoutError:
                pass
