"""Two uvicorn servers on one event loop: the main port and a metrics port that only Prometheus may
reach (the gateway's and the runtime's /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST


class CompanionServer(uvicorn.Server):
    """A second server on the same event loop (the metrics port): it leaves the signals to the main
    server, which stops it on the way out."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(main: uvicorn.Server, companion: CompanionServer) -> None:
    """Both servers until the main one exits (SIGTERM, SIGINT)."""
    companion_task = asyncio.ensure_future(companion.serve())
    try:
        await main.serve()
    finally:
        companion.should_exit = True
        await companion_task


def metrics_app(title: str, exposition: Callable[[], bytes]) -> FastAPI:
    """GET /metrics alone (`exposition()`, read at each scrape), for a port that only Prometheus may reach:
    no docs endpoints, nothing else."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
