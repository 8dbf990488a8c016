"""Plan one reconcile of an ImageModelPool. Pure: no I/O, no clock.

The pool's children are its shared runtime pods' Deployment, Service, NetworkPolicy and, with
spec.disruption, PodDisruptionBudget (`<pool>-pool`), built from the pool alone: the members change its
status (the count), never its pod template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from .. import conditions as c
from ..builders.labels import Owner
from ..builders.pool import (
    base_spec,
    build_pool_deployment,
    build_pool_disruption_budget,
    build_pool_network_policy,
    build_pool_service,
    pool_child_name,
    pool_owner,
    pool_selector_string,
)
from ..crd.models import ImageModelPoolSpec
from ..fit import INSUFFICIENT_MEMORY, Fit, check_fit
from ..poolbudget import Budgets, budgets, checkpoint_mib
from ..resolve import resolve
from . import status as s
from .diff import with_spec_hash
from .plan import (
    CREATED,
    DISRUPTION_BUDGET,
    NETWORK_POLICY,
    ChildPlan,
    Config,
    Event,
    child_plan,
    child_events,
    condition_events,
    controller_uid,
    disruption_budget_plan,
    invalid_spec,
    network_policy_plan,
)


@dataclass(frozen=True)
class PoolObserved:
    """The pool as last seen, its live children (None: absent) and its members."""

    pool: Mapping[str, Any]
    deployment: Mapping[str, Any] | None
    service: Mapping[str, Any] | None
    network_policy: Mapping[str, Any] | None = None
    members: tuple[Mapping[str, Any], ...] = ()
    disruption_budget: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PoolPlan:
    deployment: ChildPlan
    service: ChildPlan
    network_policy: ChildPlan
    # The operator's status fields to apply; None: up to date.
    status: dict[str, Any] | None
    events: tuple[Event, ...] = ()
    disruption_budget: ChildPlan = ChildPlan(DISRUPTION_BUDGET, "none")

    @property
    def children(self) -> tuple[ChildPlan, ChildPlan, ChildPlan, ChildPlan]:
        """In the order of `CHILD_FIELDS`."""
        return (self.deployment, self.service, self.network_policy, self.disruption_budget)

    @property
    def writes(self) -> bool:
        return any(child.action != "none" for child in self.children) or self.status is not None


def pool_replicas(spec: ImageModelPoolSpec, status: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> int:
    """spec.replicas without autoscaling; with it, the live count (else the autoscaler's, else minReplicas)
    within [minReplicas, maxReplicas], so a reconcile never undoes a scaling step."""
    scaling = spec.autoscaling
    if not scaling.enabled:
        return spec.replicas
    live = (deployment or {}).get("spec", {}).get("replicas")
    decided = status.get("desiredReplicas")
    base = live if live is not None else decided if decided is not None else scaling.min_replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, int(base)))


def _budget_fit(fit: Fit, budget: Budgets, family: str, precision: str, needed: int) -> Fit:
    """The pool's FitsGPU: the base pipeline's verdict, unless the GPU budget cannot hold one checkpoint."""
    if not fit.fits or budget.gpu_mib >= needed:
        return fit
    return Fit("False", INSUFFICIENT_MEMORY,
               f"the GPU budget of {budget.gpu_mib} MiB cannot hold one {family} checkpoint at {precision}, which "
               f"needs {needed} MiB: set spec.memory.gpuMiB, or pick a class with more memory",
               fit.estimate_mib, fit.limit_mib, fit.capacity_mib)


# The PoolObserved field of each of PoolPlan.children, in order.
CHILD_FIELDS = ("deployment", "service", "network_policy", "disruption_budget")


def plan_pool(observed: PoolObserved, config: Config, timestamp: str | None = None) -> PoolPlan:
    """What to write so that the pool's children and status match its spec."""
    pool = observed.pool
    metadata = pool["metadata"]
    owner = pool_owner(metadata["name"], metadata["namespace"], metadata["uid"])
    child_name = pool_child_name(owner.name)
    generation = metadata.get("generation")
    current = pool.get("status") or {}
    try:
        spec = ImageModelPoolSpec.model_validate(pool.get("spec") or {})
    except ValidationError as error:
        wanted, events = invalid_spec(pool, error, timestamp)
        return PoolPlan(ChildPlan("Deployment", "none"), ChildPlan("Service", "none"),
                        ChildPlan(NETWORK_POLICY, "none"), wanted, events)
    resolved = resolve(base_spec(spec), config.gpu_classes)
    fit = check_fit(resolved, config.gpu_classes)
    budget: Budgets | None = None
    if resolved.gpu_class is not None and resolved.model is not None:
        memory = spec.memory
        budget = budgets(resolved.model, resolved.precision, resolved.gpu_class,
                         memory.gpu_mib if memory else None, memory.host_mib if memory else None)
        fit = _budget_fit(fit, budget, spec.family, resolved.precision,
                          checkpoint_mib(resolved.model, resolved.precision))
    replicas = pool_replicas(spec, current, observed.deployment)

    foreign = [f"{kind} {child_name} already exists and is not this pool's"
               for kind, live in (("Deployment", observed.deployment), ("Service", observed.service))
               if live is not None and controller_uid(live) != owner.uid]
    if foreign:
        deployment_plan, service_plan = ChildPlan("Deployment", "none"), ChildPlan("Service", "none")
        rollout = s.blocked(s.NAME_CONFLICT, "; ".join(foreign) + ": rename this pool or remove it")
    else:
        manifest = None
        if fit.fits and budget is not None:
            manifest = with_spec_hash(build_pool_deployment(owner, resolved, budget, replicas, config.runtime_image))
        deployment_plan = child_plan("Deployment", manifest, observed.deployment)
        service_plan = child_plan("Service", with_spec_hash(build_pool_service(owner)), observed.service)
        if manifest is not None:
            rollout = s.rollout_of(observed.deployment, applying=deployment_plan.action == "apply", desired=replicas)
        else:
            rollout = s.blocked(s.DOES_NOT_FIT, f"nothing is scheduled: {fit.reason} (see the FitsGPU condition)")
    network_plan = network_policy_plan(config.runtime_ingress, lambda i: build_pool_network_policy(owner, i),
                                       owner, child_name, observed.network_policy)

    wanted = s.operator_status(
        current, generation=generation, fit=fit, rollout=rollout,
        deployment=None if deployment_plan.action == "delete" else observed.deployment,
        autoscaling=spec.autoscaling.enabled,
        desired_replicas=None if spec.autoscaling.enabled else replicas,
        selector=pool_selector_string(owner.name), timestamp=timestamp,
    )
    wanted["members"] = len(observed.members)
    if budget is not None:
        wanted["gpuBudgetMiB"], wanted["hostBudgetMiB"] = budget.gpu_mib, budget.host_mib

    progressing = c.find(current.get("conditions"), c.PROGRESSING)
    created_before = progressing is not None and progressing.get("reason") not in (s.CREATING, s.DOES_NOT_FIT,
                                                                                     s.NAME_CONFLICT)
    deployment_events = child_events(deployment_plan, observed.deployment, child_name, created_before)
    if deployment_plan.action == "apply" and observed.deployment is None and not created_before and budget:
        deployment_events.append(Event(
            "Normal", CREATED, f"created Deployment and Service {child_name}: {replicas} pool "
            f"pod{'' if replicas == 1 else 's'} of family {spec.family} at {resolved.precision} on {spec.gpu_class}, "
            f"GPU budget {budget.gpu_mib} MiB, host budget {budget.host_mib} MiB"))
    return PoolPlan(
        replace(deployment_plan, events=tuple(deployment_events)),
        replace(service_plan, events=tuple(child_events(service_plan, observed.service, child_name,
                                                         created_before))),
        network_plan,
        wanted if s.needs_apply(current, wanted) else None,
        tuple(condition_events(current.get("conditions"), wanted["conditions"])),
        disruption_budget_plan(spec.disruption, lambda d: build_pool_disruption_budget(owner, d), owner,
                               child_name, "the pool's pods", observed.disruption_budget),
    )
