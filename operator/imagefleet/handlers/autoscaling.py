"""The autoscaler's kopf handlers: one evaluation round per interval for every autoscaled resource.

The autoscaled ImageModelDeployments are a kopf index (`autoscaled`): a resource
enters it when spec.autoscaling.enabled turns true and leaves it when that turns
false or the resource is deleted, so a round reads them without a LIST, and no
finalizer or kopf patch touches them (a kopf daemon per resource needed both).
One task, started at start-up, runs a round at the start of every interval: one
batched Prometheus read, then every resource decided from its slice, with the
Deployment and the GPUs in use from kopf's indexes. A round runs to its end
before the next interval's starts, so rounds never stack; with peering, rounds
run only while this replica is kopf's active peer (`peering.active`). An event
handler sees every change between rounds: the gateway's demand on a resource at
zero wakes it at once, and `kubectl scale` is reported as ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, PLURAL, POOL_PLURAL, VERSION
from ..autoscaling.loop import Autoscaler, PoolWork
from ..autoscaling.capacity import NodeGPUs, PodGPUs
from ..autoscaling.prometheus import PrometheusClient
from ..config import OperatorSettings
from ..kube import Kube, KubeError, trimmed
from .common import write_limiter
from .indexes import Key, one
from .peering import start_rounds



class IndexedFleet:
    """The autoscaler's view of resources, Deployments and GPUs, from kopf's watch-fed indexes."""

    def __init__(self, resources: kopf.Index[Any, Any], deployments: kopf.Index[Any, Any],
                 nodes: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> None:
        self._resources, self._deployments, self._nodes, self._pods = resources, deployments, nodes, pods

    def resource(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return one(self._resources, namespace, name)

    async def deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return one(self._deployments, namespace, name)

    async def gpus(self) -> tuple[Iterable[NodeGPUs], Iterable[PodGPUs]]:
        nodes = [node for store in self._nodes.values() for node in store]
        pods = [pod for store in self._pods.values() for pod in store]
        return nodes, pods


@kopf.on.startup()
async def start_autoscaler(memo: kopf.Memo, settings: kopf.OperatorSettings, autoscaled: kopf.Index[Any, Any],
                           runtime_deployments: kopf.Index[Any, Any], gpu_nodes: kopf.Index[Any, Any],
                           gpu_pods: kopf.Index[Any, Any], **indexes: Any) -> None:
    """Build the autoscaler from the operator settings and start its rounds."""
    operator = OperatorSettings()
    prometheus = PrometheusClient(operator.prometheus_url) if operator.prometheus_url else None
    autoscaler = memo.autoscaler = Autoscaler(
        Kube.from_environment(limiter=write_limiter(memo)), prometheus, operator.gpu_classes,
        interval_seconds=operator.autoscale_interval_seconds,
        fleet=IndexedFleet(autoscaled, runtime_deployments, gpu_nodes, gpu_pods),
    )

    def pools() -> list[PoolWork]:
        """Each pool with its members (the `model_pools`, `pool_members` and `imds` indexes): an autoscaled one
        is sized, and every one's members get their residency, requests and p95."""
        members, imds = indexes["pool_members"], indexes["imds"]
        return [PoolWork(pool, tuple(member for name in members.get((namespace, pool_name), ())
                                     if (member := one(imds, namespace, name)) is not None))
                for (namespace, pool_name), store in indexes["model_pools"].items() for pool in store]

    memo.autoscaling_rounds = start_rounds(
        "autoscaling", settings, indexes, autoscaler.next_round_in,
        lambda: autoscaler.evaluate_round([resource for store in autoscaled.values() for resource in store],
                                          pools()),
    )


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    """Stop the rounds and close the autoscaler's connections."""
    rounds: asyncio.Task[None] | None = memo.get("autoscaling_rounds")
    if rounds is not None:
        rounds.cancel()
    autoscaler: Autoscaler = memo.autoscaler
    await autoscaler.aclose()


def _autoscaling_enabled(spec: kopf.Spec, **_: Any) -> bool:
    """Autoscaled on its own: autoscaling on, and not a pool member (the pool is scaled as a whole)."""
    return bool((spec.get("autoscaling") or {}).get("enabled")) and not spec.get("pool")


def _pool_autoscaling_enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


@kopf.index(GROUP, VERSION, PLURAL, when=_autoscaling_enabled)
async def autoscaled(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """The autoscaled ImageModelDeployments by (namespace, name); the others are not indexed."""
    return {(namespace, name): trimmed(body)}


@kopf.index(GROUP, VERSION, POOL_PLURAL, when=_pool_autoscaling_enabled)
async def autoscaled_pools(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """The autoscaled ImageModelPools by (namespace, name); the others are not indexed."""
    return {(namespace, name): trimmed(body)}


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


def _pool_member(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("pool"))


@kopf.on.event(GROUP, VERSION, PLURAL, when=_pool_member)
async def pool_member_event(type: str | None, namespace: str, body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo,
                            autoscaled_pools: kopf.Index[Any, Any], logger: kopf.Logger, **_: Any) -> None:
    """The gateway's fresh demand on a member wakes its autoscaled pool at zero at once."""
    pool = one(autoscaled_pools, namespace, spec["pool"])
    if type == "DELETED" or pool is None:
        return
    autoscaler: Autoscaler = memo.autoscaler
    try:
        await autoscaler.wake_pool(pool, _plain(body))
    except (KubeError, ValidationError) as error:
        logger.warning(f"autoscaler could not wake pool {spec['pool']}: {error}")


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists (a snapshot for one evaluation)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
