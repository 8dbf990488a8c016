"""In-memory indexes of the watched objects (kopf fills them before any handler runs).

Reconciles read the resource and its children from here instead of GETting them;
the autoscaler reads Deployments and the GPUs of nodes and pods (free capacity).
Nodes are cluster-scoped and watched whatever the namespaces; pods only in the
namespaces the operator watches (all of them unless IMAGEFLEET_NAMESPACES is set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from .. import GROUP, PLURAL, POOL_PLURAL, VERSION
from ..builders.inference_pool import API_GROUP as POOL_GROUP
from ..builders.inference_pool import CRD_NAME as POOL_CRD
from ..autoscaling.capacity import NodeGPUs, PodGPUs, node_gpus, pod_gpus
from ..builders.labels import MANAGED_BY, MANAGED_BY_LABEL
from ..kube import trimmed
from ..overflow import Link

Key = tuple[str, str]
RUNTIME_CHILDREN = {MANAGED_BY_LABEL: MANAGED_BY}


def one(index: Mapping[Key, Any], namespace: str, name: str) -> dict[str, Any] | None:
    store = index.get((namespace, name))
    return next(iter(store), None) if store else None


@kopf.index(GROUP, VERSION, PLURAL)
async def imds(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """ImageModelDeployments by (namespace, name)."""
    return {(namespace, name): trimmed(body)}


@kopf.index(GROUP, VERSION, POOL_PLURAL)
async def model_pools(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """ImageModelPools by (namespace, name)."""
    return {(namespace, name): trimmed(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def pool_members(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Key, str] | None:
    """The names of each pool's members by (namespace, pool); a resource without spec.pool is not indexed."""
    pool = spec.get("pool")
    return None if not pool else {(namespace, pool): name}


@kopf.index("apps", "v1", "deployments", labels=RUNTIME_CHILDREN)
async def runtime_deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """The operator's Deployments by (namespace, name): named after their ImageModelDeployment."""
    return {(namespace, name): trimmed(body)}


@kopf.index("v1", "services", labels=RUNTIME_CHILDREN)
async def runtime_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """The operator's Services by (namespace, name)."""
    return {(namespace, name): trimmed(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def routes(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, Link]:
    """Each namespace's overflow links (what the RoutingValid verdict reads), by namespace."""
    routing = spec.get("routing") or {}
    return {namespace: Link(name, routing.get("group") or name, routing.get("overflowTo"))}


@kopf.index(POOL_GROUP, "v1", "inferencepools", labels=RUNTIME_CHILDREN)
async def inference_pools(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """The operator's InferencePools by (namespace, name); kopf watches them once their CRD is installed."""
    return {(namespace, name): trimmed(body)}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=RUNTIME_CHILDREN)
async def runtime_disruption_budgets(namespace: str, name: str, body: kopf.Body,
                                     **_: Any) -> dict[Key, dict[str, Any]]:
    """The operator's PodDisruptionBudgets by (namespace, name)."""
    return {(namespace, name): trimmed(body)}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=RUNTIME_CHILDREN)
async def runtime_network_policies(namespace: str, name: str, body: kopf.Body,
                                   **_: Any) -> dict[Key, dict[str, Any]]:
    """The operator's NetworkPolicies by (namespace, name)."""
    return {(namespace, name): trimmed(body)}


def serves_v1(crd: Mapping[str, Any]) -> bool:
    """Whether a CustomResourceDefinition is Established, not being deleted, and serves v1."""
    if crd.get("metadata", {}).get("deletionTimestamp"):
        return False
    established = any(condition.get("type") == "Established" and condition.get("status") == "True"
                      for condition in (crd.get("status") or {}).get("conditions") or ())
    served = any(version.get("name") == "v1" and version.get("served")
                 for version in (crd.get("spec") or {}).get("versions") or ())
    return established and served


@kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", field="metadata.name", value=POOL_CRD)
async def inference_pool_crd(body: kopf.Body, **_: Any) -> dict[str, bool]:
    """Whether the InferencePool CRD serves v1 (no entry: it is not installed)."""
    return {POOL_CRD: serves_v1(body)}


def pool_crd_installed(index: Mapping[str, Any]) -> bool:
    store = index.get(POOL_CRD)
    return bool(store) and any(store)


@kopf.index("v1", "nodes")
async def gpu_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeGPUs]:
    """Each node's labels, schedulability and extended-resource allocatable, by name."""
    return {name: node_gpus(body)}


@kopf.index("v1", "pods")
async def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, PodGPUs] | None:
    """The extended resources of non-terminated pods bound to a node, by node; other pods are not indexed."""
    used = pod_gpus(body)
    return None if used is None else {used.node: used}
