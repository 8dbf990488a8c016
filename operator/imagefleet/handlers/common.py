"""What every handler shares: the write limiter, and reconciling one resource from the indexes with retries."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..config import OperatorSettings
from ..kube import KubeError, WriteLimiter
from ..reconcile import Reconciler
from ..reconcile.retries import Retries
from .indexes import one

logger = logging.getLogger(__name__)


def write_limiter(memo: kopf.Memo) -> WriteLimiter:
    """The one limiter of every API client of the operator (IMAGEFLEET_KUBE_WRITE_QPS and _BURST)."""
    limiter: WriteLimiter | None = memo.get("write_limiter")
    if limiter is None:
        settings = OperatorSettings()
        limiter = memo.write_limiter = WriteLimiter(settings.kube_write_qps, settings.kube_write_burst)
    return limiter


async def reconcile_from_indexes(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    imds: Mapping[Any, Any],
    runtime_deployments: Mapping[Any, Any],
    runtime_services: Mapping[Any, Any],
    imd: Mapping[str, Any] | None = None,
) -> None:
    """Reconcile `namespace/name`; on an API failure (after the client's own retries) try again later."""
    reconciler: Reconciler = memo.reconciler
    retries: Retries = memo.retries
    key = (namespace, name)
    try:
        await reconciler.reconcile(
            namespace,
            name,
            imd if imd is not None else one(imds, namespace, name),
            one(runtime_deployments, namespace, name),
            one(runtime_services, namespace, name),
        )
    except KubeError as error:

        async def again() -> None:
            await reconcile_from_indexes(memo, namespace, name, imds, runtime_deployments, runtime_services)

        delay = retries.failed(key, again)
        logger.warning("reconciling %s/%s failed (%s); retrying in %.0fs", namespace, name, error, delay)
    else:
        retries.succeeded(key)
