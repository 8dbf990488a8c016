"""The runtime's Service: one ClusterIP port in front of the runtime pods."""

from __future__ import annotations

from typing import Any

from .labels import Owner, RUNTIME_PORT, child_metadata, runtime_labels, selector_labels


def build_service(owner: Owner, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
