"""What every handler shares: the write limiter, and reconciling one resource from the indexes with retries
(handlers ask for it through the reconcile queue, `request_reconcile`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from .. import KIND, POOL_KIND
from ..autoscaling.capacity import class_usage
from ..builders.pool import pool_child_name
from ..config import OperatorSettings
from ..kube import KubeError, WriteLimiter
from ..overflow import Problem, overflow_problems
from ..reconcile import Reconciler
from ..reconcile.queue import Key, ReconcileQueue
from ..reconcile.retries import Retries
from ..reconcile.status import routing_out_of_date
from .indexes import one, pool_crd_installed

logger = logging.getLogger(__name__)


def write_limiter(memo: kopf.Memo) -> WriteLimiter:
    """The one limiter of every API client of the operator (IMAGEFLEET_KUBE_WRITE_QPS and _BURST)."""
    limiter: WriteLimiter | None = memo.get("write_limiter")
    if limiter is None:
        settings = OperatorSettings()
        limiter = memo.write_limiter = WriteLimiter(settings.kube_write_qps, settings.kube_write_burst)
    return limiter


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes (live views, kept in the memo at start-up)."""

    imds: Mapping[Any, Any]
    runtime_deployments: Mapping[Any, Any]
    runtime_services: Mapping[Any, Any]
    inference_pools: Mapping[Any, Any]
    routes: Mapping[Any, Any]
    inference_pool_crd: Mapping[Any, Any]
    runtime_disruption_budgets: Mapping[Any, Any]
    gpu_nodes: Mapping[Any, Any]
    gpu_pods: Mapping[Any, Any]
    runtime_network_policies: Mapping[Any, Any]
    model_pools: Mapping[Any, Any]
    pool_members: Mapping[Any, Any]


def free_gpus(memo: kopf.Memo, imd: Mapping[str, Any] | None) -> int | None:
    """Free GPUs of the resource's class, from the capacity index; counted only when its rollout may
    need a surge pod (maxSurge set), else None."""
    spec = (imd or {}).get("spec") or {}
    if (spec.get("rollout") or {}).get("maxSurge") in (None, 0, "0%"):
        return None
    reconciler: Reconciler = memo.reconciler
    gpu_class = reconciler.config.gpu_classes.get(spec.get("gpuClass", ""))
    if gpu_class is None:
        return None
    indexes: Indexes = memo.indexes
    usage = class_usage((node for store in indexes.gpu_nodes.values() for node in store),
                        (pod for store in indexes.gpu_pods.values() for pod in store), gpu_class)
    return None if usage is None else usage.free_gpus


async def reconcile_from_indexes(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Reconcile `namespace/name`; on an API failure (after the client's own retries) try again later."""
    reconciler: Reconciler = memo.reconciler
    retries: Retries = memo.retries
    indexes: Indexes = memo.indexes
    key = (namespace, name)
    problems = overflow_problems(namespace, indexes.routes.get(namespace, ()))
    imd = one(indexes.imds, namespace, name)
    pool = ((imd or {}).get("spec") or {}).get("pool")
    await _retried(retries, key, reconciler.reconcile(
        namespace,
        name,
        imd,
        one(indexes.runtime_deployments, namespace, name),
        one(indexes.runtime_services, namespace, name),
        inference_pool=one(indexes.inference_pools, namespace, name),
        pool_crd_installed=pool_crd_installed(indexes.inference_pool_crd),
        overflow_problem=problems.get(name),
        disruption_budget=one(indexes.runtime_disruption_budgets, namespace, name),
        free_gpus=free_gpus(memo, imd),
        network_policy=one(indexes.runtime_network_policies, namespace, name),
        model_pool=one(indexes.model_pools, namespace, pool) if pool else None,
        model_pool_deployment=one(indexes.runtime_deployments, namespace, pool_child_name(pool)) if pool else None,
    ), lambda: request_reconcile(memo, namespace, name), f"{namespace}/{name}")


async def _retried(retries: Retries, key: Key, work: Awaitable[None], again: Callable[[], None], what: str) -> None:
    """Await one reconcile; on an API failure (after the client's own retries) call `again` after a backoff."""
    try:
        await work
    except KubeError as error:

        async def later() -> None:
            again()

        delay = retries.failed(key, later)
        logger.warning("reconciling %s failed (%s); retrying in %.0fs", what, error, delay)
    else:
        retries.succeeded(key)


def request_reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Reconcile `namespace/name` soon, off the calling watch worker (see `reconcile.queue`)."""
    queue: ReconcileQueue = memo.reconciles
    queue.add((namespace, name))


async def reconcile_or_forget(memo: kopf.Memo, key: Key) -> None:
    """The reconcile queue's work: reconcile a resource the index holds, forget one it no longer holds."""
    namespace, name = key
    indexes: Indexes = memo.indexes
    if one(indexes.imds, namespace, name) is None:
        reconciler: Reconciler = memo.reconciler
        retries: Retries = memo.retries
        reconciler.forget(KIND, namespace, name)
        retries.forget(key)
    else:
        await reconcile_from_indexes(memo, namespace, name)


def recheck_overflow(memo: kopf.Memo, namespace: str, changed: str) -> None:
    """After `changed` came, changed or went: reconcile the other resources of its namespace whose
    RoutingValid verdict is no longer what their status says (a target appeared, left, or closed a loop).

    Only a resource that names an overflow target has a verdict, and it changes only with its problem
    (none, a missing target, another group, a loop): after the first event of a namespace, only the
    resources whose problem differs from the last re-check's are looked at, so a status write among
    thousands of resources costs one pass over the links, not a verdict per resource.
    """
    indexes: Indexes = memo.indexes
    links = list(indexes.routes.get(namespace, ()))
    problems = overflow_problems(namespace, links)
    seen: dict[str, dict[str, Problem]] = memo.overflow_problems
    before = seen.get(namespace)
    seen[namespace] = problems
    if before is None:
        suspects = {link.name for link in links if link.overflow_to is not None}
    else:
        suspects = {name for name in problems.keys() | before.keys() if problems.get(name) != before.get(name)}
    for name in sorted(suspects - {changed}):
        imd = one(indexes.imds, namespace, name)
        if imd is not None and routing_out_of_date(imd, problems.get(name)):
            request_reconcile(memo, namespace, name)


def pool_members(memo: kopf.Memo, namespace: str, pool: str) -> list[str]:
    """The names of the resources whose spec.pool names `namespace/pool`, from the index."""
    indexes: Indexes = memo.indexes
    return sorted(indexes.pool_members.get((namespace, pool), ()))


def request_pool_reconcile(memo: kopf.Memo, namespace: str, pool: str) -> None:
    """Reconcile the ImageModelPool `namespace/pool` soon (its own queue, like `request_reconcile`)."""
    queue: ReconcileQueue = memo.pool_reconciles
    queue.add((namespace, pool))


async def reconcile_pool_or_forget(memo: kopf.Memo, key: Key) -> None:
    """The pool queue's work: reconcile a pool the index holds (then its members, whose Ready follows it);
    forget one it no longer holds."""
    namespace, name = key
    indexes: Indexes = memo.indexes
    reconciler: Reconciler = memo.reconciler
    retries: Retries = memo.pool_retries
    pool = one(indexes.model_pools, namespace, name)
    members = pool_members(memo, namespace, name)
    if pool is None:
        reconciler.forget(POOL_KIND, namespace, name)
        retries.forget(key)
    else:
        child = pool_child_name(name)
        bodies = tuple(body for body in (one(indexes.imds, namespace, member) for member in members) if body)
        await _retried(retries, key, reconciler.reconcile_pool(
            namespace, name, pool,
            one(indexes.runtime_deployments, namespace, child),
            one(indexes.runtime_services, namespace, child),
            one(indexes.runtime_network_policies, namespace, child),
            bodies,
            one(indexes.runtime_disruption_budgets, namespace, child),
        ), lambda: request_pool_reconcile(memo, namespace, name), f"pool {namespace}/{name}")
    for member in members:
        request_reconcile(memo, namespace, member)
