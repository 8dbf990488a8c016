"""Closed-loop load over a resource's ready endpoints (or through the gateway), run in a thread, that
keeps count of what happened to every request: answered (200), refused before it was accepted
(429, 503 draining, connection refused), never sent (no endpoint known), or lost: accepted and
then not answered (the connection broke, a timeout, any other status)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter

import httpx

from imagefleet.bench.load import Picker
from imagefleet.metrics import REJECT_DRAINING

BODY = {"prompt": "a lighthouse at dusk", "response_format": "b64_json", "steps": 10}
ANSWERED, REFUSED, UNSENT, LOST = "answered", "refused", "unsent", "lost"


class Load:
    """`clients` clients, each sending its next request `pause` seconds after the last one ended."""

    def __init__(self, endpoints: Picker, clients: int, pause: float = 0.0, model: str | None = None) -> None:
        """`model`: the model group to name (requests through the gateway)."""
        self.endpoints = endpoints
        self.clients = clients
        self.pause = pause
        self.body = BODY if model is None else {**BODY, "model": model}
        self.outcomes: Counter[str] = Counter()
        self.lost: list[str] = []  # what each lost request saw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> Counter[str]:
        """Stop sending, wait for every request in flight to end; the outcome counts."""
        self._stop.set()
        self._thread.join(180)
        assert not self._thread.is_alive(), "requests still in flight 180 s after the load stopped"
        return self.outcomes

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=2)) as http:
            await asyncio.gather(*(self._client(http) for _ in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                base = await asyncio.to_thread(self.endpoints.pick)
            except Exception:  # noqa: BLE001 - no endpoint known right now (e.g. the API server is down)
                self.outcomes[UNSENT] += 1
                await asyncio.sleep(0.5)
                continue
            try:
                outcome, detail = await _send(http, base, self.body)
            finally:
                self.endpoints.release(base)
            self.outcomes[outcome] += 1
            if outcome == LOST:
                self.lost.append(f"{base}: {detail}")
            await asyncio.sleep(self.pause if outcome == ANSWERED else max(self.pause, 0.2))


async def _send(http: httpx.AsyncClient, base: str, body: dict[str, object]) -> tuple[str, str]:
    try:
        response = await http.post(f"{base}/v1/images/generations", json=body)
    except httpx.ConnectError as error:
        return REFUSED, str(error)
    except httpx.HTTPError as error:
        return LOST, f"{type(error).__name__}: {error}"
    if response.status_code == 200:
        return ANSWERED, ""
    code = _error_code(response)
    # A 429 is never accepted work: a pod's full queue, or the gateway's deadline or queue bound.
    if response.status_code == 429 or (response.status_code, code) == (503, REJECT_DRAINING):
        return REFUSED, code
    return LOST, f"{response.status_code} {response.text[:200]}"


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


class Cached:
    """Round robin over fixed URLs: a client that read the endpoints once and keeps them."""

    def __init__(self, urls: list[str]) -> None:
        self._turn = itertools.cycle(urls)

    def pick(self) -> str:
        return next(self._turn)

    def release(self, url: str) -> None:
        """Nothing to count: the URLs never change."""

