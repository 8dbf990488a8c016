"""kopf handlers of the model cache: watch the resources, their cache claims, download Jobs and the Jobs'
pods, and reconcile the owner's cache on every change. A missing token Secret is not watched (the
operator may only GET Secrets): the resource is re-checked with backoff until it appears."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from .. import GROUP, PLURAL, VERSION
from ..config import OperatorSettings
from ..handlers.common import write_limiter
from ..handlers.indexes import Key, one
from ..kube import Kube, KubeError, trimmed
from ..reconcile.retries import Retries
from .layout import CACHE_LABEL
from .plan import SECRET_KEY_MISSING, SECRET_NOT_FOUND
from .reconciler import CacheReconciler

logger = logging.getLogger(__name__)
CACHE_CHILDREN = {CACHE_LABEL: kopf.PRESENT}
# A resource whose token Secret or key is missing is re-checked after 5 s, 10 s, ... at most every minute.
RECHECK_BASE_SECONDS = 5.0
RECHECK_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class CacheIndexes:
    imds: Mapping[Any, Any]
    claims: Mapping[Any, Any]
    jobs: Mapping[Any, Any]
    failures: Mapping[Any, Any]


@kopf.index("v1", "persistentvolumeclaims", labels=CACHE_CHILDREN)
async def cache_claims(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """Model-cache claims by (namespace, owner)."""
    return {(namespace, labels[CACHE_LABEL]): trimmed(body)}


@kopf.index("batch", "v1", "jobs", labels=CACHE_CHILDREN)
async def cache_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """Download Jobs by (namespace, owner): one per cache directory the owner asked for."""
    return {(namespace, labels[CACHE_LABEL]): trimmed(body)}


@kopf.index("v1", "pods", labels=CACHE_CHILDREN)
async def cache_failures(
    namespace: str, labels: kopf.Labels, status: kopf.Status, **_: Any
) -> dict[Key, tuple[str, str]] | None:
    """(finishedAt, termination message) of each failed download pod, by (namespace, owner)."""
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode"):
            lines = (terminated.get("message") or terminated.get("reason") or "").strip().splitlines()
            message = lines[-1] if lines else f"exit code {terminated['exitCode']}"
            return {(namespace, labels[CACHE_LABEL]): (terminated.get("finishedAt") or "", message)}
    return None


@kopf.on.startup()
async def configure_cache(
    memo: kopf.Memo, imds: kopf.Index[Any, Any], cache_claims: kopf.Index[Any, Any],
    cache_jobs: kopf.Index[Any, Any], cache_failures: kopf.Index[Any, Any], **_: Any,
) -> None:
    """The cache reconciler, with its own API client under the operator's shared write limiter."""
    settings = OperatorSettings()
    memo.model_cache = CacheReconciler(Kube.from_environment(limiter=write_limiter(memo)), settings.gpu_classes,
                                       settings.runtime_image)
    memo.cache_indexes = CacheIndexes(imds, cache_claims, cache_jobs, cache_failures)
    memo.cache_retries = Retries(base_seconds=RECHECK_BASE_SECONDS, max_seconds=RECHECK_MAX_SECONDS)


@kopf.on.cleanup()
async def close_cache(memo: kopf.Memo, **_: Any) -> None:
    retries: Retries | None = memo.get("cache_retries")
    if retries is not None:
        retries.cancel_all()
    reconciler: CacheReconciler | None = memo.get("model_cache")
    if reconciler is not None:
        reconciler.kube.close()


async def reconcile_cache(memo: kopf.Memo, namespace: str, name: str, imd: Mapping[str, Any] | None = None) -> None:
    """Reconcile one resource's cache from the indexes; retry on an API failure or a missing Secret."""
    reconciler: CacheReconciler = memo.model_cache
    indexes: CacheIndexes = memo.cache_indexes
    retries: Retries = memo.cache_retries
    key = (namespace, name)
    imd = imd if imd is not None else one(indexes.imds, namespace, name)
    if imd is None:
        return
    failures = sorted(indexes.failures.get(key) or ())

    async def again() -> None:
        await reconcile_cache(memo, namespace, name)

    try:
        verdict = await reconciler.reconcile(imd, one(indexes.claims, namespace, name),
                                             list(indexes.jobs.get(key) or ()), failures[-1][1] if failures else None)
    except KubeError as error:
        delay = retries.failed(key, again)
        logger.warning("model cache of %s/%s: %s; retrying in %.0fs", namespace, name, error, delay)
        return
    if verdict is not None and verdict[1] in (SECRET_NOT_FOUND, SECRET_KEY_MISSING):
        retries.failed(key, again)
    else:
        retries.succeeded(key)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_cache_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A resource changed: reconcile its cache (or forget it)."""
    if type == "DELETED":
        memo.cache_retries.forget((namespace, name))
        memo.model_cache.forget(namespace, name)
        return
    await reconcile_cache(memo, namespace, name, trimmed(body))


@kopf.on.event("v1", "persistentvolumeclaims", labels=CACHE_CHILDREN)
async def cache_claim_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A cache claim came, changed or went."""
    await reconcile_cache(memo, namespace, labels[CACHE_LABEL])


@kopf.on.event("batch", "v1", "jobs", labels=CACHE_CHILDREN)
async def cache_job_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A download Job started, failed a try, succeeded or gave up."""
    await reconcile_cache(memo, namespace, labels[CACHE_LABEL])


@kopf.on.event("v1", "pods", labels=CACHE_CHILDREN)
async def cache_pod_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A download pod changed (its termination message goes into ModelCached)."""
    await reconcile_cache(memo, namespace, labels[CACHE_LABEL])
