"""The autoscaler's kopf handlers: one evaluation loop per autoscaled ImageModelDeployment.

A daemon rather than a timer, because the interval is an operator setting read
at startup (IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS), not at import. kopf starts
the daemon when spec.autoscaling.enabled turns true and stops it when it turns
false or the resource goes away. Every daemon wakes at the start of the same
interval, so the round's batched Prometheus read is shared by all of them; the
Deployment and the GPUs in use come from kopf's indexes, not API requests. An event handler sees every change between
evaluations: the gateway's demand on a resource at zero wakes it at once, and
`kubectl scale` is reported as ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, PLURAL, VERSION
from ..autoscaling.loop import Autoscaler
from ..autoscaling.capacity import NodeGPUs, PodGPUs
from ..autoscaling.prometheus import PrometheusClient
from ..config import OperatorSettings
from ..kube import Kube, KubeError
from .common import write_limiter
from .indexes import one


class IndexedFleet:
    """The autoscaler's view of Deployments and GPUs, from kopf's watch-fed indexes."""

    def __init__(self, deployments: kopf.Index[Any, Any], nodes: kopf.Index[Any, Any],
                 pods: kopf.Index[Any, Any]) -> None:
        self._deployments, self._nodes, self._pods = deployments, nodes, pods

    async def deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return one(self._deployments, namespace, name)

    async def gpus(self) -> tuple[Iterable[NodeGPUs], Iterable[PodGPUs]]:
        nodes = [node for store in self._nodes.values() for node in store]
        pods = [pod for store in self._pods.values() for pod in store]
        return nodes, pods


@kopf.on.startup()
async def start_autoscaler(memo: kopf.Memo, runtime_deployments: kopf.Index[Any, Any],
                           gpu_nodes: kopf.Index[Any, Any], gpu_pods: kopf.Index[Any, Any], **_: Any) -> None:
    """Build the autoscaler from the operator settings."""
    settings = OperatorSettings()
    prometheus = PrometheusClient(settings.prometheus_url) if settings.prometheus_url else None
    memo.autoscaler = Autoscaler(
        Kube.from_environment(limiter=write_limiter(memo)), prometheus, settings.gpu_classes,
        interval_seconds=settings.autoscale_interval_seconds,
        fleet=IndexedFleet(runtime_deployments, gpu_nodes, gpu_pods),
    )


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    """Close the autoscaler's connections."""
    autoscaler: Autoscaler = memo.autoscaler
    await autoscaler.aclose()


def _autoscaling_enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


@kopf.daemon(GROUP, VERSION, PLURAL, when=_autoscaling_enabled, cancellation_timeout=10)
async def autoscale(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger,
                    **_: Any) -> None:
    """Evaluate the resource at the start of every interval until autoscaling is turned off."""
    autoscaler: Autoscaler = memo.autoscaler
    try:
        while not stopped:
            await stopped.wait(autoscaler.next_round_in())
            if stopped:
                break
            try:
                await autoscaler.evaluate(_plain(body))
            except (KubeError, ValidationError) as error:
                logger.warning(f"autoscaling skipped this interval: {error}")
    finally:
        autoscaler.forget(body.metadata.uid or "")


@kopf.on.event(GROUP, VERSION, PLURAL, when=_autoscaling_enabled)
async def autoscaled_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                           **_: Any) -> None:
    """Wake a resource at zero on fresh gateway demand; report kubectl scale as ignored."""
    if type == "DELETED":
        return
    autoscaler: Autoscaler = memo.autoscaler
    try:
        await autoscaler.on_event(_plain(body))
    except (KubeError, ValidationError) as error:
        logger.warning(f"autoscaler could not act on this change: {error}")


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists (a snapshot for one evaluation)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
