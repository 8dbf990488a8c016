"""Closed-loop load over a resource's ready endpoints, run in a thread, that keeps count of
what happened to every request: answered (200), refused by the fleet before it accepted the
request (429 queue full, 503 draining, connection refused), never sent (no endpoint known), or
lost: accepted and then not answered (the connection broke, a timeout, any other status)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

import httpx

from imagefleet.metrics import REJECT_DRAINING, REJECT_QUEUE_FULL

BODY = {"prompt": "a lighthouse at dusk", "response_format": "b64_json", "steps": 10}
ANSWERED, REFUSED, UNSENT, LOST = "answered", "refused", "unsent", "lost"


class Load:
    """`clients` clients, each sending its next request `pause` seconds after the last one ended."""

    def __init__(self, pick: Callable[[], str], clients: int, pause: float = 0.0) -> None:
        self.pick = pick
        self.clients = clients
        self.pause = pause
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
                base = await asyncio.to_thread(self.pick)
            except Exception:  # noqa: BLE001 - no endpoint known right now (e.g. the API server is down)
                self.outcomes[UNSENT] += 1
                await asyncio.sleep(0.5)
                continue
            outcome, detail = await _send(http, base)
            self.outcomes[outcome] += 1
            if outcome == LOST:
                self.lost.append(f"{base}: {detail}")
            await asyncio.sleep(self.pause if outcome == ANSWERED else max(self.pause, 0.2))


async def _send(http: httpx.AsyncClient, base: str) -> tuple[str, str]:
    try:
        response = await http.post(f"{base}/v1/images/generations", json=BODY)
    except httpx.ConnectError as error:
        return REFUSED, str(error)
    except httpx.HTTPError as error:
        return LOST, f"{type(error).__name__}: {error}"
    if response.status_code == 200:
        return ANSWERED, ""
    code = _error_code(response)
    if (response.status_code, code) in ((429, REJECT_QUEUE_FULL), (503, REJECT_DRAINING)):
        return REFUSED, code
    return LOST, f"{response.status_code} {response.text[:200]}"


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def pick_from(urls: list[str]) -> Callable[[], str]:
    """Round robin over fixed URLs (a client that cached the endpoints)."""
    state = {"next": 0}

    def pick() -> str:
        url = urls[state["next"] % len(urls)]
        state["next"] += 1
        return url

    return pick

