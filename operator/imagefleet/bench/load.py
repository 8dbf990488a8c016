"""The async load generator: keeps `concurrency` requests in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from imagefleet.bench.stats import RequestRecord

GENERATIONS_PATH = "/v1/images/generations"
NO_ENDPOINT = "no-endpoint"
NO_ENDPOINT_WAIT_SECONDS = 0.2


class Picker(Protocol):
    """Chooses the base URL for each request (over a resource's ready endpoints, say)."""

    def pick(self) -> str:
        """A base URL; LookupError while there is none."""
        ...

    def release(self, url: str) -> None:
        """The request sent to `url` is over."""
        ...


@dataclass(frozen=True)
class Plan:
    """How much load: a number of requests, or a duration (exactly one is set)."""

    concurrency: int
    requests: int | None = None
    duration_s: float | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if (self.requests is None) == (self.duration_s is None):
            raise ValueError("set exactly one of requests and duration_s")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


@dataclass(frozen=True)
class Run:
    records: list[RequestRecord]
    wall_seconds: float


def request_body(
    *,
    prompt: str,
    size: str | None = None,
    steps: int | None = None,
    n: int = 1,
    seed: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | None = None,
) -> dict[str, Any]:
    """An OpenAI-style generations body; unset options are left to the runtime."""
    optional = {
        "size": size,
        "steps": steps,
        "seed": seed,
        "guidance_scale": guidance_scale,
        "negative_prompt": negative_prompt,
    }
    body: dict[str, Any] = {"prompt": prompt, "n": n, "response_format": "b64_json"}
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def generations_url(base_url: str) -> str:
    """The generations endpoint of a runtime's base URL."""
    return base_url.rstrip("/") + GENERATIONS_PATH


async def run_load(
    base_url: str | Picker,
    body: dict[str, Any],
    plan: Plan,
    on_record: Callable[[RequestRecord], None] = lambda _: None,
) -> Run:
    """Send `body` to the runtime at `base_url` as `plan` says; one record per request.

    `base_url` may be a Picker choosing the base URL of each request; while it has none,
    each worker records a "no-endpoint" error and waits NO_ENDPOINT_WAIT_SECONDS.
    """
    start = time.perf_counter()
    deadline = None if plan.duration_s is None else start + plan.duration_s
    remaining = plan.requests or 0
    records: list[RequestRecord] = []

    def claim() -> bool:
        nonlocal remaining
        if deadline is not None:
            return time.perf_counter() < deadline
        if remaining == 0:
            return False
        remaining -= 1
        return True

    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    async with httpx.AsyncClient(timeout=plan.timeout_s, limits=limits) as client:

        async def worker() -> None:
            while claim():
                if isinstance(base_url, str):
                    record = await _send(client, generations_url(base_url), body, start)
                else:
                    try:
                        url = base_url.pick()
                    except LookupError:
                        record = RequestRecord(time.perf_counter() - start, 0.0, NO_ENDPOINT, 0)
                        await asyncio.sleep(NO_ENDPOINT_WAIT_SECONDS)
                    else:
                        try:
                            record = await _send(client, generations_url(url), body, start)
                        finally:
                            base_url.release(url)
                records.append(record)
                on_record(record)

        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    return Run(records=records, wall_seconds=time.perf_counter() - start)


async def _send(client: httpx.AsyncClient, url: str, body: dict[str, Any], start: float) -> RequestRecord:
    sent = time.perf_counter()
    error: str | None = None
    images = 0
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException:
        error = "timeout"
    except httpx.TransportError as exc:
        error = type(exc).__name__
    else:
        if response.status_code != 200:
            error = str(response.status_code)
        elif (count := _count_images(response)) is None:
            error = "invalid-response"
        else:
            images = count
    done = time.perf_counter()
    return RequestRecord(started_s=sent - start, latency_s=done - sent, error=error, images=images)


def _count_images(response: httpx.Response) -> int | None:
    """Images in an OpenAI-style `{"data": [...]}` body; None when it is not one."""
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return None
    return len(data) if isinstance(data, list) else None
