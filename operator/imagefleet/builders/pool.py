"""The ImageModelPool's children: the runtime Deployment and Service of its shared pods, named `<pool>-pool`
(and their NetworkPolicy and, with spec.disruption, PodDisruptionBudget).

They are the ImageModelDeployment builders' own (same security context, probes, grace period, resources),
built for the pool's base resource (its family on its GPU class), then renamed, labelled
`imagefleet.io/pool: <pool>`, owned by the pool, and given the runtime's pool-mode settings. Nothing in
them depends on the members: adding or removing one changes no pod template.
"""

from __future__ import annotations

from typing import Any

from .. import GROUP, POOL_KIND
from ..crd.models import DisruptionSpec, ImageModelDeploymentSpec, ImageModelPoolSpec, ModelSpec, Tier
from ..crd.pool_rules import POOL_SUFFIX
from ..poolbudget import Budgets
from ..resolve import Resolved
from .deployment import build_deployment
from .disruption import build_pod_disruption_budget
from .labels import Owner, owner_reference, selector_labels
from .network_policy import RuntimeIngress, build_network_policy
from .service import build_service

POOL_LABEL = f"{GROUP}/pool"
# The pool's pods batch like a standard-tier resource; members keep their own tiers at the gateway.
POOL_TIER: Tier = "standard"


def pool_child_name(pool: str) -> str:
    """The name of the pool's Deployment, Service, NetworkPolicy and PodDisruptionBudget."""
    return f"{pool}{POOL_SUFFIX}"


def pool_owner(name: str, namespace: str, uid: str) -> Owner:
    return Owner(name=name, namespace=namespace, uid=uid, kind=POOL_KIND)


def base_spec(spec: ImageModelPoolSpec) -> ImageModelDeploymentSpec:
    """The pool's pods as one resource: its family's base checkpoint on its GPU class, at its precision."""
    return ImageModelDeploymentSpec(model=ModelSpec(name=spec.family), tier=POOL_TIER, precision=spec.precision,
                                    gpu_class=spec.gpu_class, replicas=spec.replicas)


def pool_selector(pool: str) -> dict[str, str]:
    return selector_labels(pool_child_name(pool))


def pool_selector_string(pool: str) -> str:
    return ",".join(f"{key}={value}" for key, value in pool_selector(pool).items())


def _pool_owned(manifest: dict[str, Any], pool: Owner) -> dict[str, Any]:
    """`manifest` (built for the child's name) owned by the pool and labelled with it."""
    metadata = manifest["metadata"]
    metadata["ownerReferences"] = [owner_reference(pool)]
    metadata["labels"] = {**metadata["labels"], POOL_LABEL: pool.name}
    return manifest


def _child(pool: Owner) -> Owner:
    return Owner(name=pool_child_name(pool.name), namespace=pool.namespace, uid=pool.uid, kind=pool.kind)


def pool_env(family: str, budgets: Budgets) -> list[dict[str, str]]:
    """The runtime's pool mode (its --pool-family, --gpu-budget-mib and --host-budget-mib settings)."""
    values = {"POOL_FAMILY": family, "GPU_BUDGET_MIB": budgets.gpu_mib, "HOST_BUDGET_MIB": budgets.host_mib}
    return [{"name": f"IMAGEFLEET_{key}", "value": str(value)} for key, value in values.items()]


def build_pool_deployment(pool: Owner, resolved: Resolved, budgets: Budgets, replicas: int,
                          image: str) -> dict[str, Any]:
    """The Deployment of `replicas` pool pods running the runtime in pool mode for `resolved` (`base_spec`)."""
    manifest = _pool_owned(build_deployment(_child(pool), resolved, replicas, image), pool)
    template = manifest["spec"]["template"]
    template["metadata"]["labels"] = {**template["metadata"]["labels"], POOL_LABEL: pool.name}
    container = template["spec"]["containers"][0]
    container["env"] = [*container["env"], *pool_env(resolved.spec.model.name, budgets)]
    return manifest


def build_pool_service(pool: Owner) -> dict[str, Any]:
    return _pool_owned(build_service(_child(pool), POOL_TIER), pool)


def build_pool_network_policy(pool: Owner, ingress: RuntimeIngress) -> dict[str, Any]:
    return _pool_owned(build_network_policy(_child(pool), POOL_TIER, ingress), pool)


def build_pool_disruption_budget(pool: Owner, disruption: DisruptionSpec) -> dict[str, Any]:
    """The ImageModelDeployments' PodDisruptionBudget, over the pool's pods."""
    return _pool_owned(build_pod_disruption_budget(_child(pool), POOL_TIER, disruption), pool)
