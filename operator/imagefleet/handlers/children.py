"""Drift correction: a change to (or the deletion of) a runtime Deployment or Service reconciles its owner.

Deployment events also carry readiness (readyReplicas) into the owner's status.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..reconcile import Reconciler
from .common import reconcile_from_indexes
from .indexes import RUNTIME_CHILDREN


async def _child_changed(
    kind: str, type_: str | None, namespace: str, name: str, memo: kopf.Memo,
    imds: kopf.Index[Any, Any], runtime_deployments: kopf.Index[Any, Any], runtime_services: kopf.Index[Any, Any],
) -> None:
    reconciler: Reconciler = memo.reconciler
    if type_ == "DELETED":
        reconciler.forget(kind, namespace, name)
    await reconcile_from_indexes(memo, namespace, name, imds, runtime_deployments, runtime_services)


@kopf.on.event("apps", "v1", "deployments", labels=RUNTIME_CHILDREN)
async def deployment_changed(
    type: str | None, namespace: str, name: str, memo: kopf.Memo,
    imds: kopf.Index[Any, Any], runtime_deployments: kopf.Index[Any, Any], runtime_services: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """A runtime Deployment changed: restore it if it drifted, and update its owner's status."""
    await _child_changed("Deployment", type, namespace, name, memo, imds, runtime_deployments, runtime_services)


@kopf.on.event("v1", "services", labels=RUNTIME_CHILDREN)
async def service_changed(
    type: str | None, namespace: str, name: str, memo: kopf.Memo,
    imds: kopf.Index[Any, Any], runtime_deployments: kopf.Index[Any, Any], runtime_services: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """A runtime Service changed: restore it if it drifted."""
    await _child_changed("Service", type, namespace, name, memo, imds, runtime_deployments, runtime_services)
