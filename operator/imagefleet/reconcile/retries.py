"""Retry a failed reconcile later, with exponential backoff, at most one pending retry per resource."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Key = tuple[str, str]


class Retries:
    def __init__(self, *, base_seconds: float = 2.0, max_seconds: float = 300.0) -> None:
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._attempts: dict[Key, int] = {}
        self._pending: dict[Key, asyncio.Task[None]] = {}

    def delay(self, key: Key) -> float:
        return min(self.base_seconds * 2 ** (self._attempts.get(key, 1) - 1), self.max_seconds)

    def failed(self, key: Key, again: Callable[[], Awaitable[None]]) -> float:
        """Schedule `again` after the next backoff delay (unless one is pending); the delay."""
        self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = self.delay(key)
        if key not in self._pending:
            self._pending[key] = asyncio.create_task(self._later(key, delay, again))
        return delay

    def succeeded(self, key: Key) -> None:
        self._attempts.pop(key, None)

    def forget(self, key: Key) -> None:
        self._attempts.pop(key, None)
        task = self._pending.pop(key, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for key in list(self._pending):
            self.forget(key)

    async def _later(self, key: Key, delay: float, again: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        self._pending.pop(key, None)
        await again()
