"""Labels, annotations and owner references of everything the operator makes (docs/concepts.md shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import GROUP, KIND, VERSION

RUNTIME_PORT = 8000
RUNTIME_PORT_NAME = "http"  # the pods' and Services' port of generations, /v1/load and probes
# The runtime's GET /metrics, apart from the generation port: only Prometheus is let in there.
RUNTIME_METRICS_PORT = 9090
RUNTIME_METRICS_PORT_NAME = "metrics"
MANAGED_BY = "imagefleet"
NAME_LABEL = f"{GROUP}/name"
TIER_LABEL = f"{GROUP}/tier"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class Owner:
    """The ImageModelDeployment (or ImageModelPool) that owns a child."""

    name: str
    namespace: str
    uid: str
    kind: str = KIND


def selector_labels(name: str) -> dict[str, str]:
    """The immutable part of the pod labels: what the Deployment and the Service select on."""
    return {"app.kubernetes.io/name": "imagefleet-runtime", "app.kubernetes.io/instance": name, NAME_LABEL: name}


def selector_string(name: str) -> str:
    """The selector as `status.selector` holds it (for the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(name).items())


def runtime_labels(name: str, tier: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "runtime",
        MANAGED_BY_LABEL: MANAGED_BY,
        TIER_LABEL: tier,
    }


def prometheus_annotations() -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(RUNTIME_METRICS_PORT), "prometheus.io/path": "/metrics"}


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller reference: deleting the owner deletes the child (garbage collection)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": owner.name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }
