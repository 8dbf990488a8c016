"""The manifests a platform team's linters see: the rendered chart, the examples, the
Deployment and Service the operator builds for each example, and the model cache's claim and Job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from imagefleet.builders import Owner, RuntimeIngress, build_deployment, build_network_policy, build_service
from imagefleet.catalog import load_gpu_classes
from imagefleet.config import DEFAULT_RUNTIME_IMAGE
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.modelcache.plan import build_claim, build_job
from imagefleet.resolve import resolve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Chart values that between them render every template.
CHART_VALUES: dict[str, dict[str, Any]] = {
    "chart-defaults": {},
    "chart-everything": {
        "replicaCount": 2,
        "podDisruptionBudget": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "gateway": {"enabled": True, "apiKeys": {"keys": [{"name": "team-a", "sha256": "0" * 64}]}},
    },
    "chart-watch-namespaces": {"watchNamespaces": ["team-a", "team-b"], "gateway": {"enabled": True}},
}


# What the chart passes the operator (IMAGEFLEET_RUNTIME_INGRESS_FROM, IMAGEFLEET_RUNTIME_METRICS_FROM) with
# the gateway on.
RUNTIME_PEERS = RuntimeIngress(
    generation=({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "imagefleet-system"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "imagefleet",
                                                 "app.kubernetes.io/component": "gateway"}}},),
    metrics=({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},),
)


def operator_output() -> list[dict[str, Any]]:
    """The runtime Deployment, Service and NetworkPolicy the operator builds for each example that fits its
    GPU class."""
    classes = load_gpu_classes()
    built = []
    for path in EXAMPLES:
        for resource in yaml.safe_load_all(path.read_text()):
            resolved = resolve(ImageModelDeploymentSpec.model_validate(resource["spec"]), classes)
            if resolved.gpu_class is None:
                continue
            owner = Owner(name=resource["metadata"]["name"], namespace="team-a", uid="00000000-0000-0000-0000-000000000001")
            built.append(build_deployment(owner, resolved, 1, DEFAULT_RUNTIME_IMAGE))
            built.append(build_service(owner, resolved.spec.tier))
            built.append(build_network_policy(owner, resolved.spec.tier, RUNTIME_PEERS))
            if resolved.spec.model.cache is None and resolved.spec.model.persistent_volume_claim is None:
                built.extend(_cached(owner, resource["spec"], classes))
    return built


def _cached(owner: Owner, spec: dict[str, Any], classes: Any) -> list[dict[str, Any]]:
    """The example with a shared model cache and a token: its Deployment, claim and download Job."""
    cache = {"size": "60Gi", "accessModes": ["ReadWriteMany"], "tokenSecretRef": {"name": "hf-token", "key": "token"}}
    cached = {**spec, "model": {**spec["model"], "cache": cache}}
    if cached["model"]["name"] == "tiny":
        return []
    resolved = resolve(ImageModelDeploymentSpec.model_validate(cached), classes)
    owner = Owner(name=f"{owner.name}-cached", namespace=owner.namespace, uid=owner.uid)
    assert resolved.spec.model.cache is not None
    return [build_deployment(owner, resolved, 1, DEFAULT_RUNTIME_IMAGE), build_claim(owner, resolved.spec.model.cache),
            build_job(owner, resolved.spec, resolved.precision, resolved.gpu_class, DEFAULT_RUNTIME_IMAGE)]
