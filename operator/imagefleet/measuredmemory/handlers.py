"""kopf wiring of measured memory: a task started at start-up runs one round per autoscaler interval over
every ImageModelDeployment (the `imds` index), while this replica is the active peer. Without a Prometheus
URL nothing is read and nothing runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from ..autoscaling.prometheus import PrometheusClient
from ..config import OperatorSettings
from ..handlers.common import write_limiter
from ..handlers.peering import start_rounds
from ..kube import Kube
from .reporter import MemoryReporter


@kopf.on.startup()
async def start_memory_rounds(memo: kopf.Memo, settings: kopf.OperatorSettings, imds: kopf.Index[Any, Any],
                              **indexes: Any) -> None:
    """Start the rounds when the operator reads a Prometheus."""
    operator = OperatorSettings()
    if not operator.prometheus_url:
        return
    reporter = memo.memory_reporter = MemoryReporter(Kube.from_environment(limiter=write_limiter(memo)),
                                                     PrometheusClient(operator.prometheus_url))
    interval = operator.autoscale_interval_seconds
    memo.memory_rounds = start_rounds(
        "measured memory", settings, indexes,
        # Half-way through each interval, away from the autoscaler's round.
        lambda: interval - (time.monotonic() + interval / 2) % interval,
        lambda: reporter.round([resource for store in imds.values() for resource in store]),
    )


@kopf.on.cleanup()
async def stop_memory_rounds(memo: kopf.Memo, **_: Any) -> None:
    rounds: asyncio.Task[None] | None = memo.get("memory_rounds")
    if rounds is not None:
        rounds.cancel()
    reporter: MemoryReporter | None = memo.get("memory_reporter")
    if reporter is not None:
        await reporter.aclose()
