"""`until_watched`: rescan until kopf watches the resource, and give up after the timeout.

kopf's own discovery step against a real API server: tests/operator/test_routing_cluster.py.
"""

from __future__ import annotations

from imagefleet.handlers.discovery import until_watched


async def test_rescans_until_watched_and_counts_the_rescans() -> None:
    seen: list[int] = []

    async def rescan() -> None:
        seen.append(len(seen) + 1)

    assert await until_watched(lambda: len(seen) >= 3, rescan, interval=0) == 3
    assert seen == [1, 2, 3]


async def test_no_rescan_when_already_watched() -> None:
    async def rescan() -> None:
        raise AssertionError("rescanned a watched resource")

    assert await until_watched(lambda: True, rescan) == 0


async def test_gives_up_after_the_timeout() -> None:
    rescans = 0

    async def rescan() -> None:
        nonlocal rescans
        rescans += 1

    assert await until_watched(lambda: False, rescan, timeout=0.05, interval=0.01) is None
    assert rescans >= 2  # it tried again within the timeout before giving up
