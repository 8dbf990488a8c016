"""Reconcile requests off kopf's watch workers, one run per resource at a time, coalesced.

kopf handles each object's watch events one by one in a worker of its own, and updates
the indexes in that worker too. A handler that awaited the reconcile held that worker for
as long as the reconcile waited for write tokens (minutes at 2,000 resources): the object's
later events piled up in memory, and the indexes, which every plan reads, lagged behind
the cluster. Handlers now only add the resource's key here and return. Like a
controller-runtime work queue: a key added while its run waits to start is not added
twice, and a key added while it runs is run once more afterwards (it reads the indexes
then, so it sees every event that came meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

Key = tuple[str, str]

logger = logging.getLogger(__name__)


class ReconcileQueue:
    def __init__(self, work: Callable[[Key], Awaitable[None]]) -> None:
        self._work = work
        self._waiting: set[Key] = set()
        self._running: set[Key] = set()
        self._again: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, key: Key) -> None:
        """Reconcile `key` soon: once, however often it is added before its run starts."""
        if key in self._running:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            task = asyncio.create_task(self._run(key), name=f"reconcile {key[0]}/{key[1]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Key) -> None:
        self._waiting.discard(key)
        self._running.add(key)
        try:
            await self._work(key)
        except Exception:  # noqa: BLE001 - one resource's bug must not stop the others
            logger.exception("reconciling %s/%s failed", *key)
        finally:
            self._running.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    async def aclose(self) -> None:
        """Cancel every waiting and running reconcile (at shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
