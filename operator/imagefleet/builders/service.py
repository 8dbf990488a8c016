"""The runtime's Service: ClusterIP ports for generations and for metrics in front of the runtime pods."""

from __future__ import annotations

from typing import Any

from .labels import (
    RUNTIME_METRICS_PORT,
    RUNTIME_METRICS_PORT_NAME,
    RUNTIME_PORT,
    RUNTIME_PORT_NAME,
    Owner,
    child_metadata,
    runtime_labels,
    selector_labels,
)


def build_service(owner: Owner, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {"name": RUNTIME_PORT_NAME, "port": RUNTIME_PORT, "targetPort": RUNTIME_PORT_NAME, "protocol": "TCP"},
                {"name": RUNTIME_METRICS_PORT_NAME, "port": RUNTIME_METRICS_PORT, "targetPort": RUNTIME_METRICS_PORT_NAME,
                 "protocol": "TCP"},
            ],
        },
    }
