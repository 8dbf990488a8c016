"""The runtime pods' NetworkPolicy: only the configured peers reach each port (the chart names its
gateway for the generation port and Prometheus for the metrics port); any other pod of the cluster
is refused. The runtime has no key of its own, so this policy is what keeps other tenants' pods
from sending it generations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .labels import RUNTIME_METRICS_PORT_NAME, RUNTIME_PORT_NAME, Owner, child_metadata, runtime_labels, selector_labels


@dataclass(frozen=True)
class RuntimeIngress:
    """Who may reach the runtime pods (NetworkPolicyPeer objects: namespaceSelector and podSelector,
    or ipBlock): `generation` on the `http` port (generations, /v1/load, probes), `metrics` on the
    `metrics` port only."""

    generation: tuple[Mapping[str, Any], ...]
    metrics: tuple[Mapping[str, Any], ...] = ()


def build_network_policy(owner: Owner, tier: str, ingress: RuntimeIngress) -> dict[str, Any]:
    """Ingress to the resource's runtime pods: each port from its own peers only (a port with no
    peers takes nothing)."""
    rules = [{"from": [dict(peer) for peer in peers], "ports": [{"port": port, "protocol": "TCP"}]}
             for port, peers in ((RUNTIME_PORT_NAME, ingress.generation), (RUNTIME_METRICS_PORT_NAME, ingress.metrics))
             if peers]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }
