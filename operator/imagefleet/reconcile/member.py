"""The status of a pool member (an ImageModelDeployment with spec.pool). Pure: no I/O, no clock.

A member has no children of its own; its Ready condition follows the pool's pods, or says why the pool
cannot serve it (PoolNotFound, FamilyMismatch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import conditions as c
from ..builders.pool import pool_child_name, pool_selector_string
from ..crd.models import ImageModelDeploymentSpec
from .status import Verdict

# Reasons of a member's Ready and Progressing conditions.
SERVED_BY_POOL = "ServedByPool"
POOL_NOT_FOUND = "PoolNotFound"
FAMILY_MISMATCH = "FamilyMismatch"
POOL_NOT_READY = "PoolNotReady"
POOL_MEMBER = "PoolMember"


def member_family(spec: ImageModelDeploymentSpec) -> str:
    """The catalog family of a member's model: its own name for a catalog model, else model.family."""
    return spec.model.family or spec.model.name


def member_ready(name: str, spec: ImageModelDeploymentSpec, pool: Mapping[str, Any] | None,
                 deployment: Mapping[str, Any] | None) -> Verdict:
    """A member's Ready: the pool's pods serve it, or why not (PoolNotFound, FamilyMismatch, PoolNotReady)."""
    assert spec.pool is not None
    if pool is None:
        return (c.FALSE, POOL_NOT_FOUND, f"spec.pool: there is no ImageModelPool {spec.pool} in this namespace; "
                                         "create it (kubectl get imagemodelpools)")
    family, pool_family = member_family(spec), (pool.get("spec") or {}).get("family")
    if family != pool_family:
        return (c.FALSE, FAMILY_MISMATCH, f"spec.model: {spec.model.name} is of family {family}, but ImageModelPool "
                                          f"{spec.pool} serves family {pool_family}: join a pool of family {family}")
    live = (deployment or {}).get("status") or {}
    ready, wanted = int(live.get("readyReplicas") or 0), int((deployment or {}).get("spec", {}).get("replicas") or 0)
    if ready == 0:
        detail = "scaled to zero (any member's demand wakes it)" if deployment is not None and wanted == 0 \
            else f"0/{wanted} pods ready"
        return (c.FALSE, POOL_NOT_READY, f"ImageModelPool {spec.pool} ({pool_child_name(spec.pool)}): {detail}")
    adapter = f" with adapter {spec.model.adapter.name}" if spec.model.adapter else ""
    return (c.TRUE, SERVED_BY_POOL, f"{name}: {spec.model.name}{adapter} served by ImageModelPool {spec.pool} "
                                    f"({ready}/{wanted} pods ready, family {family})")


def member_status(current: Mapping[str, Any], name: str, spec: ImageModelDeploymentSpec,
                  pool: Mapping[str, Any] | None, deployment: Mapping[str, Any] | None, *,
                  generation: int | None, timestamp: str | None = None) -> dict[str, Any]:
    """The operator's status fields of a member: Ready (see `member_ready`), Progressing False, and the pool's
    pods as its replicas."""
    assert spec.pool is not None
    existing: Sequence[Mapping[str, Any]] = current.get("conditions") or ()
    ready = member_ready(name, spec, pool, deployment)
    verdicts = [(c.READY, ready), (c.PROGRESSING, (c.FALSE, POOL_MEMBER,
                                                   f"no Deployment of its own: a member of ImageModelPool {spec.pool}"))]
    conditions = [c.make(type_, status, reason, message, generation=generation, previous=c.find(existing, type_),
                         timestamp=timestamp) for type_, (status, reason, message) in verdicts]
    live = (deployment or {}).get("status") or {}
    wanted: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": int(live.get("replicas") or 0),
        "readyReplicas": int(live.get("readyReplicas") or 0),
        "selector": pool_selector_string(spec.pool),
    }
    if ready[1] not in (POOL_NOT_FOUND, FAMILY_MISMATCH):
        wanted["pool"] = spec.pool
    return wanted
