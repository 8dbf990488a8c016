"""Status conditions as the Kubernetes API conventions define them (metav1.Condition).

Conditions are plain dicts in camelCase, as stored in `status.conditions`.
`lastTransitionTime` changes only when `status` changes; a new reason, message
or observedGeneration alone keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]

READY = "Ready"
PROGRESSING = "Progressing"
FITS_GPU = "FitsGPU"
METRICS_AVAILABLE = "MetricsAvailable"
ROUTING_VALID = "RoutingValid"
INFERENCE_POOL_READY = "InferencePoolReady"

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def now() -> str:
    """The current time as Kubernetes serializes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def status_of(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> str | None:
    condition = find(conditions, type_)
    return None if condition is None else condition.get("status")


def make(
    type_: str, status: str, reason: str, message: str, *, generation: int | None, previous: Mapping[str, Any] | None,
    timestamp: str | None = None,
) -> Condition:
    """A condition; it keeps `previous`'s lastTransitionTime when the status is unchanged."""
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    else:
        transition = timestamp or now()
    condition: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    timestamp: str | None = None,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set (replaced in place, or appended)."""
    existing = list(conditions or ())
    new = make(type_, status, reason, message, generation=generation, previous=find(existing, type_),
               timestamp=timestamp)
    for index, condition in enumerate(existing):
        if condition.get("type") == type_:
            return [dict(c) for c in existing[:index]] + [new] + [dict(c) for c in existing[index + 1 :]]
    return [dict(c) for c in existing] + [new]


def transitions(
    old: Iterable[Mapping[str, Any]] | None, new: Iterable[Mapping[str, Any]] | None
) -> list[tuple[str, str | None, Mapping[str, Any]]]:
    """(type, old status, new condition) for every condition whose status changed."""
    changes = []
    for condition in new or ():
        before = status_of(old, condition["type"])
        if before != condition["status"]:
            changes.append((condition["type"], before, condition))
    return changes
