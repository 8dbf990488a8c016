"""The operator's part of an ImageModelDeployment's status, from what the Deployment reports.

Ready is True only when the rollout of the current pod template is complete
and every desired replica is ready. Progressing is True while the Deployment
is being created, changed or waits for pods, False once done (or stuck).
The autoscaler owns queueDepth, p95Seconds, lastScaleTime, autoscaling, its own
conditions, MetricsAvailable once it has set it, and desiredReplicas while
autoscaling is on; the operator's server-side apply never touches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import conditions as c
from ..fit import Fit
from ..overflow import Problem

# Reasons of the Ready and Progressing conditions.
CREATING = "Creating"
ROLLING_OUT = "RollingOut"
REPLICAS_NOT_READY = "ReplicasNotReady"
ALL_REPLICAS_READY = "AllReplicasReady"
ROLLOUT_COMPLETE = "RolloutComplete"
SCALED_TO_ZERO = "ScaledToZero"
DOES_NOT_FIT = "DoesNotFit"
NAME_CONFLICT = "NameConflict"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
AWAITING_METRICS = "AwaitingMetrics"
AUTOSCALING_DISABLED = "AutoscalingDisabled"
# Reasons of RoutingValid (besides imagefleet.overflow's) and InferencePoolReady.
OVERFLOW_TARGET_VALID = "OverflowTargetValid"
CRD_NOT_INSTALLED = "CRDNotInstalled"
POOL_CONFIGURED = "PoolConfigured"

Verdict = tuple[str, str, str]  # status, reason, message

# Status fields only the operator writes: absent from its apply means "remove".
REMOVABLE_FIELDS = ("memory", "pool")


@dataclass(frozen=True)
class Rollout:
    """The Ready and Progressing verdicts: (status, reason, message) each."""

    ready: Verdict
    progressing: Verdict


def _count(value: Any) -> int:
    return int(value or 0)


def rollout_of(deployment: Mapping[str, Any] | None, *, applying: bool, desired: int) -> Rollout:
    """Ready/Progressing for a model that fits, from the live Deployment (None: not there yet)."""
    if deployment is None:
        message = f"creating the runtime Deployment ({desired} replicas)"
        return Rollout((c.FALSE, CREATING, message), (c.TRUE, CREATING, message))
    name = deployment["metadata"]["name"]
    status = deployment.get("status") or {}
    if not status.get("observedGeneration") and not applying:
        # Created, not yet seen by the Deployment controller: still "creating" (no status write).
        return rollout_of(None, applying=False, desired=desired)
    # One message from the apply until the controller reports progress: no status write in between.
    rolling_out = f"rolling out Deployment {name}"
    if applying:
        return Rollout((c.FALSE, ROLLING_OUT, rolling_out), (c.TRUE, ROLLING_OUT, rolling_out))
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
            message = f"Deployment {name}: {condition.get('message', 'progress deadline exceeded')}"
            return Rollout((c.FALSE, PROGRESS_DEADLINE_EXCEEDED, message),
                           (c.FALSE, PROGRESS_DEADLINE_EXCEEDED, message))
    wanted = _count(deployment.get("spec", {}).get("replicas", 1))
    updated, total, ready = (_count(status.get(key)) for key in ("updatedReplicas", "replicas", "readyReplicas"))
    if _count(status.get("observedGeneration")) < _count(deployment["metadata"].get("generation")):
        return Rollout((c.FALSE, ROLLING_OUT, rolling_out), (c.TRUE, ROLLING_OUT, rolling_out))
    if updated < wanted or total > updated:
        message = f"{updated} of {wanted} replicas updated, {total - updated} old replicas left"
        return Rollout((c.FALSE, ROLLING_OUT, message), (c.TRUE, ROLLING_OUT, message))
    if wanted == 0:
        message = "scaled to zero replicas"
        return Rollout((c.FALSE, SCALED_TO_ZERO, message), (c.FALSE, ROLLOUT_COMPLETE, message))
    if ready < wanted:
        message = f"{ready}/{wanted} replicas ready"
        return Rollout((c.FALSE, REPLICAS_NOT_READY, message), (c.TRUE, REPLICAS_NOT_READY, message))
    message = f"{ready}/{wanted} replicas ready"
    return Rollout((c.TRUE, ALL_REPLICAS_READY, message), (c.FALSE, ROLLOUT_COMPLETE, message))


def blocked(reason: str, message: str) -> Rollout:
    """Ready/Progressing when nothing can run (the model does not fit, a name is taken)."""
    return Rollout((c.FALSE, reason, message), (c.FALSE, reason, message))


def operator_status(
    current: Mapping[str, Any],
    *,
    generation: int | None,
    fit: Fit,
    rollout: Rollout,
    deployment: Mapping[str, Any] | None,
    autoscaling: bool,
    desired_replicas: int | None,
    selector: str,
    details: Sequence[tuple[str, Verdict]] = (),
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The operator's status fields as they should be now: the body of its server-side apply.

    Only the operator's own conditions are listed (the list is a map keyed by
    type, so an apply leaves other managers' conditions alone). MetricsAvailable
    is the operator's while autoscaling is off (Unknown: no metrics are read) and
    the autoscaler's while it is on (see `initial_metrics_condition`).
    desiredReplicas None: the autoscaler's to set. A field left out that the
    operator set before (memory, once nothing is estimated) is removed by the apply,
    and so is a detail condition (RoutingValid, InferencePoolReady) left out of `details`.
    """
    existing: Sequence[Mapping[str, Any]] = current.get("conditions") or ()
    verdicts = [
        (c.FITS_GPU, (fit.status, fit.reason, fit.message)),
        (c.READY, rollout.ready),
        (c.PROGRESSING, rollout.progressing),
    ]
    if not autoscaling:
        verdicts.append((c.METRICS_AVAILABLE, (c.UNKNOWN, AUTOSCALING_DISABLED, "autoscaling is off: no metrics are read")))
    verdicts.extend(details)
    conditions = [
        c.make(type_, status, reason, message, generation=generation, previous=c.find(existing, type_),
               timestamp=timestamp)
        for type_, (status, reason, message) in verdicts
    ]
    live = (deployment or {}).get("status") or {}
    wanted: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": _count(live.get("replicas")),
        "readyReplicas": _count(live.get("readyReplicas")),
        "selector": selector,
    }
    if desired_replicas is not None:
        wanted["desiredReplicas"] = desired_replicas
    if fit.estimate_mib is not None:
        wanted["memory"] = {"estimateMiB": fit.estimate_mib, "limitMiB": fit.limit_mib, "capacityMiB": fit.capacity_mib}
    return wanted


def routing_verdict(name: str, overflow_to: str | None, problem: Problem | None) -> Verdict | None:
    """RoutingValid for a resource with an overflow target (None: it names none)."""
    if overflow_to is None:
        return None
    if problem is not None:
        return (c.FALSE, problem.reason, problem.message)
    return (c.TRUE, OVERFLOW_TARGET_VALID,
            f"spec.routing.overflowTo: requests {name} cannot take go to {overflow_to} when all its pods are saturated")


def routing_out_of_date(imd: Mapping[str, Any], problem: Problem | None) -> bool:
    """Whether the RoutingValid condition of `imd` (as last seen) differs from the verdict now."""
    name = imd["metadata"]["name"]
    overflow_to = ((imd.get("spec") or {}).get("routing") or {}).get("overflowTo")
    verdict = routing_verdict(name, overflow_to, problem)
    condition = c.find((imd.get("status") or {}).get("conditions"), c.ROUTING_VALID)
    seen = None if condition is None else (condition.get("status"), condition.get("reason"), condition.get("message"))
    return seen != verdict


def initial_metrics_condition(
    current: Mapping[str, Any], *, autoscaling: bool, generation: int | None, timestamp: str | None = None
) -> dict[str, Any] | None:
    """MetricsAvailable=Unknown for an autoscaled resource the autoscaler has not reported on yet.

    Applied once under a field manager of its own that never applies again, so
    the operator's regular apply (which leaves the condition out) never removes
    it, and the autoscaler's first write simply replaces it.
    """
    if not autoscaling or c.find(current.get("conditions"), c.METRICS_AVAILABLE) is not None:
        return None
    condition = c.make(c.METRICS_AVAILABLE, c.UNKNOWN, AWAITING_METRICS, "the autoscaler has not read metrics yet",
                       generation=generation, previous=None, timestamp=timestamp)
    return {"conditions": [condition]}


def needs_apply(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether `current` differs from `wanted` on anything the operator sets (or must remove)."""
    for key, value in wanted.items():
        if key == "conditions":
            if any(c.find(current.get("conditions"), cond["type"]) != cond for cond in value):
                return True
        elif current.get(key) != value:
            return True
    return any(key in current and key not in wanted for key in REMOVABLE_FIELDS)
