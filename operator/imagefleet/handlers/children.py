"""Drift correction: a change to (or the deletion of) a runtime Deployment, Service, InferencePool,
PodDisruptionBudget or NetworkPolicy reconciles its owner; so does the InferencePool CRD coming or going.

Deployment events also carry readiness (readyReplicas) into the owner's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..builders.inference_pool import API_GROUP as POOL_GROUP
from ..builders.inference_pool import CRD_NAME as POOL_CRD
from ..reconcile import Reconciler
from ..builders.pool import POOL_LABEL
from .common import Indexes, request_pool_reconcile, request_reconcile
from .discovery import DISCOVERY_TIMEOUT_SECONDS, watch_when_served
from .indexes import RUNTIME_CHILDREN, one, serves_v1


async def _child_changed(kind: str, type_: str | None, namespace: str, name: str, memo: kopf.Memo,
                         labels: Mapping[str, str] | None = None) -> None:
    """Reconcile the child's owner: its ImageModelDeployment, or its ImageModelPool (label imagefleet.io/pool)."""
    reconciler: Reconciler = memo.reconciler
    if type_ == "DELETED":
        reconciler.forget(kind, namespace, name)
    pool = (labels or {}).get(POOL_LABEL)
    if pool:
        request_pool_reconcile(memo, namespace, pool)
    else:
        request_reconcile(memo, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=RUNTIME_CHILDREN)
async def deployment_changed(type: str | None, namespace: str, name: str, labels: kopf.Labels, memo: kopf.Memo,
                             **_: Any) -> None:
    """A runtime Deployment changed: restore it if it drifted, and update its owner's status."""
    await _child_changed("Deployment", type, namespace, name, memo, labels)


@kopf.on.event("v1", "services", labels=RUNTIME_CHILDREN)
async def service_changed(type: str | None, namespace: str, name: str, labels: kopf.Labels, memo: kopf.Memo,
                          **_: Any) -> None:
    """A runtime Service changed: restore it if it drifted."""
    await _child_changed("Service", type, namespace, name, memo, labels)


@kopf.on.event(POOL_GROUP, "v1", "inferencepools", labels=RUNTIME_CHILDREN)
async def inference_pool_changed(type: str | None, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """An InferencePool changed: restore it if it drifted."""
    await _child_changed("InferencePool", type, namespace, name, memo)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=RUNTIME_CHILDREN)
async def disruption_budget_changed(type: str | None, namespace: str, name: str, labels: kopf.Labels,
                                    memo: kopf.Memo, **_: Any) -> None:
    """A runtime PodDisruptionBudget changed: restore it if it drifted."""
    await _child_changed("PodDisruptionBudget", type, namespace, name, memo, labels)


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=RUNTIME_CHILDREN)
async def network_policy_changed(type: str | None, namespace: str, name: str, labels: kopf.Labels,
                                 memo: kopf.Memo, **_: Any) -> None:
    """A runtime NetworkPolicy changed: restore it if it drifted (or was deleted)."""
    await _child_changed("NetworkPolicy", type, namespace, name, memo, labels)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", field="metadata.name", value=POOL_CRD)
async def inference_pool_crd_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """The InferencePool CRD was installed, changed or removed: make sure kopf watches the pools once it serves
    them (`discovery`), then reconcile every resource that asks for a pool."""
    if serves_v1(body):
        rescans = await watch_when_served(body, memo)
        if rescans is None:
            logger.warning(f"{POOL_CRD} is Established but the API server's discovery did not serve it within "
                           f"{DISCOVERY_TIMEOUT_SECONDS:g} s: InferencePools are not watched (drift of them is not "
                           "restored) until the next change of the CRD or a restart of the operator")
        elif rescans:
            logger.info(f"{POOL_CRD}: kopf watches InferencePools after {rescans} more discovery read(s)")
    indexes: Indexes = memo.indexes
    for namespace, name in list(indexes.imds):
        imd = one(indexes.imds, namespace, name)
        pool = ((imd or {}).get("spec", {}).get("routing") or {}).get("inferencePool") or {}
        if pool.get("enabled"):
            request_reconcile(memo, namespace, name)
