"""The runtime pods' PodDisruptionBudget (spec.disruption) and topology spread (spec.topologySpread)."""

from __future__ import annotations

from typing import Any

from ..crd.models import DisruptionSpec, TopologySpreadSpec
from .labels import Owner, child_metadata, runtime_labels, selector_labels

# Only the pods of the Deployment's current ReplicaSet count towards the skew (a rollout's old pods
# would otherwise push the new ones onto other nodes or zones).
REVISION_LABEL = "pod-template-hash"


def build_pod_disruption_budget(owner: Owner, tier: str, disruption: DisruptionSpec) -> dict[str, Any]:
    """A budget over the runtime pods. A pod that is not Ready (loading, or out of service) serves
    nothing, so evictions may always take it (unhealthyPodEvictionPolicy AlwaysAllow): a broken pod
    never blocks a node drain."""
    budget = (
        {"maxUnavailable": disruption.max_unavailable}
        if disruption.max_unavailable is not None
        else {"minAvailable": disruption.min_available}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner.name)},
            **budget,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def topology_spread_constraints(name: str, spread: list[TopologySpreadSpec]) -> list[dict[str, Any]]:
    """One constraint per entry, selecting this resource's pods of the current revision."""
    return [
        {
            "maxSkew": entry.max_skew,
            "topologyKey": entry.topology_key,
            "whenUnsatisfiable": entry.when_unsatisfiable,
            "labelSelector": {"matchLabels": selector_labels(name)},
            "matchLabelKeys": [REVISION_LABEL],
        }
        for entry in spread
    ]
