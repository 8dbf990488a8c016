"""The runtime pods' NetworkPolicy: only the configured peers (the gateway and Prometheus, which the
chart names) reach the runtime port; any other pod of the cluster is refused. The runtime has no
key of its own, so this policy is what keeps other tenants' pods from sending it generations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .labels import Owner, child_metadata, runtime_labels, selector_labels


def build_network_policy(owner: Owner, tier: str, peers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ingress to the resource's runtime pods, on their `http` port, from `peers` only (NetworkPolicyPeer
    objects: namespaceSelector and podSelector, or ipBlock)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [dict(peer) for peer in peers], "ports": [{"port": "http", "protocol": "TCP"}]}],
        },
    }
