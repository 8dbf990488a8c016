"""The reconcile queue: handlers return at once; one run per resource at a time, coalesced."""

from __future__ import annotations

import asyncio

import pytest

from imagefleet.reconcile.queue import Key, ReconcileQueue


class Work:
    """Records the runs; a run of a key in `held` waits until it is released."""

    def __init__(self) -> None:
        self.runs: list[Key] = []
        self.running: set[Key] = set()
        self.overlapped = False
        self.held: dict[Key, asyncio.Event] = {}
        self.fail: set[Key] = set()

    async def __call__(self, key: Key) -> None:
        self.overlapped |= key in self.running
        self.running.add(key)
        self.runs.append(key)
        try:
            if key in self.held:
                await self.held[key].wait()
            if key in self.fail:
                raise RuntimeError(f"bug reconciling {key}")
        finally:
            self.running.discard(key)


async def _idle() -> None:
    """Let every runnable task run (the work awaits nothing but the held events)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_adds_before_the_run_starts_make_one_run() -> None:
    work = Work()
    queue = ReconcileQueue(work)
    for _ in range(3):
        queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    await _idle()
    assert sorted(work.runs) == [("ns", "a"), ("ns", "b")]


async def test_adds_during_a_run_make_exactly_one_more_run_after_it() -> None:
    work = Work()
    key = ("ns", "a")
    work.held[key] = asyncio.Event()
    queue = ReconcileQueue(work)
    queue.add(key)
    await _idle()
    assert work.runs == [key]  # waiting (for write tokens, say): the handler has long returned
    for _ in range(5):
        queue.add(key)
    await _idle()
    assert work.runs == [key]  # no second run while the first is in progress
    work.held[key].set()
    await _idle()
    assert work.runs == [key, key]
    assert not work.overlapped


async def test_a_held_resource_does_not_hold_up_another() -> None:
    work = Work()
    work.held[("ns", "slow")] = asyncio.Event()
    queue = ReconcileQueue(work)
    queue.add(("ns", "slow"))
    queue.add(("ns", "fast"))
    await _idle()
    assert ("ns", "fast") in work.runs and work.running == {("ns", "slow")}
    await queue.aclose()
    assert work.running == set()


async def test_a_failing_run_is_logged_and_the_key_can_run_again(caplog: pytest.LogCaptureFixture) -> None:
    work = Work()
    key = ("ns", "a")
    work.fail.add(key)
    queue = ReconcileQueue(work)
    queue.add(key)
    await _idle()
    assert "reconciling ns/a failed" in caplog.text and "bug reconciling" in caplog.text
    work.fail.clear()
    queue.add(key)
    await _idle()
    assert work.runs == [key, key]
