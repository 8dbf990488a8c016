"""Uvicorn, with SIGTERM meaning "drain, then exit" instead of "stop listening now", and a header
timeout (a client sending its headers a byte at a time is cut off)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

from imagefleet.http_limits import HeaderTimeoutProtocol

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """The first SIGTERM/SIGINT runs `drain()` while still listening (new requests get a 503 that
    says why, instead of a refused connection), then shuts down as usual. A second signal exits at
    once, without waiting for open requests. Connections use HeaderTimeoutProtocol, whatever
    `config.http` said."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        config.http = HeaderTimeoutProtocol
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None:  # not serving yet: uvicorn's own handling
            super().handle_exit(sig, frame)
            return
        if self._draining:
            logger.warning("signal %d again: exiting now; requests not yet answered are cut off", sig)
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        logger.info("signal %d: draining before exit (send it again to exit now)", sig)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        assert self._loop is not None
        self._drain_task = self._loop.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        finally:
            self.should_exit = True
