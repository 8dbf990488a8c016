"""kopf wiring of measured memory: a task started at start-up runs one round per autoscaler interval over
every ImageModelDeployment (the `imds` index), while this replica is the active peer. Without a Prometheus
URL nothing is read and nothing runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from ..autoscaling.prometheus import PrometheusClient
from ..config import OperatorSettings
from ..handlers.common import write_limiter
from ..handlers.peering import this_replica_active
from ..kube import Kube
from .reporter import MemoryReporter

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def start_memory_rounds(memo: kopf.Memo, settings: kopf.OperatorSettings, imds: kopf.Index[Any, Any],
                              **indexes: Any) -> None:
    """Start the rounds when the operator reads a Prometheus."""
    operator = OperatorSettings()
    if not operator.prometheus_url:
        return
    reporter = memo.memory_reporter = MemoryReporter(Kube.from_environment(limiter=write_limiter(memo)),
                                                     PrometheusClient(operator.prometheus_url))
    memo.memory_rounds = asyncio.create_task(
        run_rounds(reporter, imds, operator.autoscale_interval_seconds, lambda: this_replica_active(settings, indexes)),
        name="imagefleet measured-memory rounds",
    )


async def run_rounds(reporter: MemoryReporter, imds: kopf.Index[Any, Any], interval_seconds: float,
                     is_active: Callable[[], bool]) -> None:
    """Every interval (half-way through it, away from the autoscaler's round), report every resource."""
    while True:
        await asyncio.sleep(interval_seconds - (time.monotonic() + interval_seconds / 2) % interval_seconds)
        if not is_active():
            continue
        try:
            await reporter.round([resource for store in imds.values() for resource in store])
        except Exception:  # noqa: BLE001 - a bug in one round must not end the reporting
            logger.exception("a measured-memory round failed")


@kopf.on.cleanup()
async def stop_memory_rounds(memo: kopf.Memo, **_: Any) -> None:
    rounds: asyncio.Task[None] | None = memo.get("memory_rounds")
    if rounds is not None:
        rounds.cancel()
    reporter: MemoryReporter | None = memo.get("memory_reporter")
    if reporter is not None:
        await reporter.aclose()
