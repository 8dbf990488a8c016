"""The operator's /metrics endpoint (IMAGEFLEET_METRICS_PORT): every resource's status as series,
and the autoscaler's PromQL queries, batch splits and round durations.

See `imagefleet.resource_metrics` for the series. Unset, the operator serves no metrics.
"""

from __future__ import annotations

from typing import Any

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from .. import GROUP, PLURAL, VERSION
from ..autoscaling import batch
from ..autoscaling.loop import ROUND_SECONDS
from ..config import OperatorSettings
from ..kube import trimmed
from ..resource_metrics import ResourceCollector


@kopf.on.startup()
async def serve_metrics(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start the metrics server when a port is configured."""
    port = OperatorSettings().metrics_port
    if port is None:
        return
    memo.resource_metrics = ResourceCollector()
    registry = CollectorRegistry()
    registry.register(memo.resource_metrics)
    registry.register(batch.QUERIES)
    registry.register(batch.SPLITS)
    registry.register(ROUND_SECONDS)
    memo.metrics_server = start_http_server(port, registry=registry)
    logger.info(f"serving metrics on :{port}/metrics")


@kopf.on.cleanup()
async def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    """Stop the metrics server."""
    served = memo.get("metrics_server")
    if served is not None:
        server, thread = served
        server.shutdown()
        server.server_close()
        thread.join()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def export_resource(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the exported copy of the resource current; drop it when the resource is deleted."""
    collector: ResourceCollector | None = memo.get("resource_metrics")
    if collector is None:
        return
    if type == "DELETED":
        collector.remove(body.metadata.namespace or "", body.metadata.name or "")
    else:
        collector.update(trimmed(body))
