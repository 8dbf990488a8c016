"""Backoff for failed reconciles."""

from __future__ import annotations

import asyncio

from imagefleet.reconcile.retries import Retries


async def test_backoff_doubles_up_to_the_cap_and_resets_on_success() -> None:
    retries = Retries(base_seconds=1, max_seconds=5)
    calls: list[int] = []

    async def again() -> None:
        calls.append(1)

    delays = [retries.failed(("ns", "a"), again) for _ in range(5)]
    assert delays == [1, 2, 4, 5, 5]
    retries.succeeded(("ns", "a"))
    assert retries.delay(("ns", "a")) == 1
    retries.cancel_all()


async def test_one_pending_retry_per_resource_and_it_runs() -> None:
    retries = Retries(base_seconds=0.01)
    ran = asyncio.Event()
    count = 0

    async def again() -> None:
        nonlocal count
        count += 1
        ran.set()

    retries.failed(("ns", "a"), again)
    retries.failed(("ns", "a"), again)
    await asyncio.wait_for(ran.wait(), 5)
    await asyncio.sleep(0.05)
    assert count == 1


async def test_forget_cancels_the_pending_retry() -> None:
    retries = Retries(base_seconds=0.01)
    count = 0

    async def again() -> None:
        nonlocal count
        count += 1

    retries.failed(("ns", "a"), again)
    retries.forget(("ns", "a"))
    await asyncio.sleep(0.05)
    assert count == 0
