"""Operator settings, applied at start-up (never at import), and the shared reconciler."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import kopf

from .. import GROUP
from ..config import OperatorSettings
from ..kube import FIELD_MANAGER, Kube
from ..reconcile import Config, Reconciler
from ..reconcile.queue import ReconcileQueue
from ..reconcile.retries import Retries
from .common import Indexes, reconcile_or_forget, reconcile_pool_or_forget, write_limiter
from .resync import resync_forever

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    imds: kopf.Index[Any, Any],
    runtime_deployments: kopf.Index[Any, Any],
    runtime_services: kopf.Index[Any, Any],
    inference_pools: kopf.Index[Any, Any],
    routes: kopf.Index[Any, Any],
    inference_pool_crd: kopf.Index[Any, Any],
    runtime_disruption_budgets: kopf.Index[Any, Any],
    gpu_nodes: kopf.Index[Any, Any],
    gpu_pods: kopf.Index[Any, Any],
    runtime_network_policies: kopf.Index[Any, Any],
    model_pools: kopf.Index[Any, Any],
    pool_members: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """Keep any kopf state in imagefleet.io annotations, set up peering, the reconciler and the resync."""
    operator = OperatorSettings()
    # A structural schema prunes unknown status fields, kopf's default storage: use annotations
    # (the reconcile handlers are level-based and need none; this covers any handler that does).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # The operator posts its own Events (specific reasons, on change only); kopf adds only its warnings.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = FIELD_MANAGER
    if operator.peering:
        settings.peering.standalone = False
        settings.peering.mandatory = True
        settings.peering.name = operator.peering
        # kopf pauses every operator that sees a live peer of the same priority: give each
        # replica its own, so the highest serves and the others wait as standbys.
        settings.peering.priority = random.SystemRandom().randint(1, 2**31 - 1)
    else:
        settings.peering.standalone = True
    gpu_classes = operator.gpu_classes
    memo.settings = operator
    memo.kopf_settings = settings  # for kopf's discovery step (handlers.discovery)
    memo.reconciler = Reconciler(
        Kube.from_environment(limiter=write_limiter(memo)),
        Config(gpu_classes=gpu_classes, runtime_image=operator.runtime_image, endpoint_picker=operator.endpoint_picker,
               runtime_ingress=operator.runtime_ingress),
    )
    memo.retries = Retries()
    memo.reconciles = ReconcileQueue(lambda key: reconcile_or_forget(memo, key))
    memo.pool_retries = Retries()
    # Per resource: the pool its spec named when last seen (handlers.pools.member_event).
    memo.member_pools = {}
    memo.pool_reconciles = ReconcileQueue(lambda key: reconcile_pool_or_forget(memo, key))
    # Per namespace: the overflow verdicts the last re-check saw (handlers.common.recheck_overflow).
    memo.overflow_problems = {}
    memo.indexes = Indexes(imds, runtime_deployments, runtime_services, inference_pools, routes, inference_pool_crd,
                           runtime_disruption_budgets, gpu_nodes, gpu_pods, runtime_network_policies, model_pools,
                           pool_members)
    memo.resync = asyncio.create_task(
        resync_forever(memo, operator.resync_seconds),
        name="imagefleet resync",
    )
    logger.info(
        "imagefleet operator: GPU classes %s, runtime image %s, %s",
        ", ".join(gpu_classes), operator.runtime_image,
        f"peering {operator.peering}" if operator.peering else "standalone",
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync loop, pending retries and queued reconciles, and close the API client."""
    task: asyncio.Task[None] | None = memo.get("resync")
    if task is not None:
        task.cancel()
    for retries_name in ("retries", "pool_retries"):
        retries: Retries | None = memo.get(retries_name)
        if retries is not None:
            retries.cancel_all()
    for queue_name in ("reconciles", "pool_reconciles"):
        reconciles: ReconcileQueue | None = memo.get(queue_name)
        if reconciles is not None:
            await reconciles.aclose()
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        reconciler.kube.close()
