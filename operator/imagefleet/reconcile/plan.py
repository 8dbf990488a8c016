"""Plan one reconcile: from what is observed to what must be written. Pure: no I/O, no clock.

`plan()` decides, for an ImageModelDeployment and its live children, which
children to apply or delete, the status fields to apply, and the Events to post.
When everything already matches, the plan is empty: no API writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import ValidationError

from .. import conditions as c
from ..builders import (
    EndpointPicker,
    Owner,
    RuntimeIngress,
    build_deployment,
    build_inference_pool,
    build_network_policy,
    build_pod_disruption_budget,
    build_service,
    selector_string,
)
from ..builders.inference_pool import CRD_NAME, DEFAULT_ENDPOINT_PICKER
from ..builders.labels import RUNTIME_PORT
from ..catalog import GPUClass
from ..crd.models import DisruptionSpec, ImageModelDeploymentSpec
from ..fit import Fit, check_fit
from ..modelcache.plan import AWAITING_MODEL_CACHE, awaiting_cache
from ..overflow import Problem
from ..resolve import Resolved, resolve
from ..tiers import Autoscaling
from . import status as s
from .diff import SPEC_HASH_ANNOTATION, differences, with_spec_hash
from .member import member_status
from .surge import ROLLOUT_BLOCKED, surge_blocked_message

Action = Literal["none", "apply", "delete"]
EventType = Literal["Normal", "Warning"]
MAX_PATHS_IN_MESSAGE = 5

# Event reasons (besides the FitsGPU reasons of imagefleet.fit).
CREATED = "Created"
UPDATED = "Updated"
DRIFT_CORRECTED = "DriftCorrected"
RECREATED = "Recreated"
DELETED = "Deleted"
READY = "Ready"
NOT_READY = "NotReady"
FITS_NOW = "FitsGPU"
INVALID_SPEC = "InvalidSpec"
INFERENCE_POOL = "InferencePool"
DISRUPTION_BUDGET = "PodDisruptionBudget"
NETWORK_POLICY = "NetworkPolicy"
DEPRECATED_FIELD = "DeprecatedField"
_WARNING_READY_REASONS = {s.PROGRESS_DEADLINE_EXCEEDED, s.DOES_NOT_FIT, s.NAME_CONFLICT}
_NOT_CREATED_REASONS = {s.CREATING, s.DOES_NOT_FIT, s.NAME_CONFLICT, AWAITING_MODEL_CACHE}


@dataclass(frozen=True)
class Config:
    """What the plan needs from the operator's configuration."""

    gpu_classes: dict[str, GPUClass]
    runtime_image: str
    endpoint_picker: EndpointPicker = DEFAULT_ENDPOINT_PICKER
    # Who may reach the runtime pods' ports; None: the operator makes no NetworkPolicy.
    runtime_ingress: RuntimeIngress | None = None


@dataclass(frozen=True)
class Observed:
    """The resource as last seen, its live children (None: absent) and what its neighbours decide."""

    imd: Mapping[str, Any]
    deployment: Mapping[str, Any] | None
    service: Mapping[str, Any] | None
    inference_pool: Mapping[str, Any] | None = None
    # Whether the InferencePool CRD is installed (Established, v1 served).
    pool_crd_installed: bool = False
    # What is wrong with spec.routing.overflowTo, from the namespace's resources (imagefleet.overflow).
    overflow_problem: Problem | None = None
    disruption_budget: Mapping[str, Any] | None = None
    # Free GPUs of the resource's class (the autoscaler's capacity index); None: unknown or not asked.
    free_gpus: int | None = None
    network_policy: Mapping[str, Any] | None = None
    # For a member (spec.pool): the ImageModelPool it names and the pool's Deployment (None: absent).
    model_pool: Mapping[str, Any] | None = None
    model_pool_deployment: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ChildPlan:
    kind: str
    action: Action
    # The manifest to apply (action "apply"); None otherwise.
    manifest: dict[str, Any] | None = None
    # Where the live object differs from the manifest.
    drift: tuple[str, ...] = ()
    # Posted once the write succeeded.
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Plan:
    deployment: ChildPlan
    service: ChildPlan
    # The operator's status fields to apply; None: they are up to date.
    status: dict[str, Any] | None
    # Condition transitions, posted once the status patch succeeded.
    events: tuple[Event, ...] = field(default=())
    # MetricsAvailable=Unknown for a new autoscaled resource (applied once, see status.py).
    initial_metrics: dict[str, Any] | None = None
    inference_pool: ChildPlan = ChildPlan(INFERENCE_POOL, "none")
    disruption_budget: ChildPlan = ChildPlan(DISRUPTION_BUDGET, "none")
    network_policy: ChildPlan = ChildPlan(NETWORK_POLICY, "none")

    @property
    def children(self) -> tuple[ChildPlan, ChildPlan, ChildPlan, ChildPlan, ChildPlan]:
        return (self.deployment, self.service, self.inference_pool, self.disruption_budget, self.network_policy)

    @property
    def writes(self) -> bool:
        return (any(child.action != "none" for child in self.children) or self.status is not None
                or self.initial_metrics is not None)


def desired_replicas(
    spec: ImageModelDeploymentSpec, autoscaling: Autoscaling, status: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
) -> int:
    """The Deployment's replicas: spec.replicas without autoscaling.

    With autoscaling the autoscaler owns the count (it writes status.desiredReplicas,
    then the Deployment): the live Deployment's count stands, clamped to
    [minReplicas, maxReplicas]; a new Deployment starts at status.desiredReplicas,
    else minReplicas. Reading the live count, not a possibly older status, means a
    reconcile never undoes a scaling step.
    """
    if not autoscaling.enabled:
        return spec.replicas
    live = (deployment or {}).get("spec", {}).get("replicas")
    decided = status.get("desiredReplicas")
    base = live if live is not None else decided if decided is not None else autoscaling.min_replicas
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, int(base)))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for reference in obj.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("controller"):
            return str(reference.get("uid"))
    return None


def _not_ours(live: Mapping[str, Any]) -> str:
    """Why a live object of a child's name is left alone: never adopted (a forced apply would take it
    over, and garbage collection would delete it with the resource)."""
    if controller_uid(live) is None:
        return "was not created by imagefleet (it has no controller owner reference); it is never adopted"
    return "belongs to someone else"


def child_plan(kind: str, manifest: dict[str, Any] | None, live: Mapping[str, Any] | None) -> ChildPlan:
    if live is not None and live.get("metadata", {}).get("deletionTimestamp"):
        return ChildPlan(kind, "none")  # going away; recreated once the watch sees it gone
    if manifest is None:
        return ChildPlan(kind, "delete" if live is not None else "none")
    if live is None:
        return ChildPlan(kind, "apply", manifest)
    drift = tuple(differences(manifest, live))
    return ChildPlan(kind, "apply" if drift else "none", manifest if drift else None, drift)


def _paths(drift: tuple[str, ...]) -> str:
    shown = ", ".join(path.lstrip(".") for path in drift[:MAX_PATHS_IN_MESSAGE])
    more = len(drift) - MAX_PATHS_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def _hash_of(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)


def child_events(plan: ChildPlan, live: Mapping[str, Any] | None, name: str, created_before: bool) -> list[Event]:
    if plan.action == "delete":
        return [Event("Warning", DELETED, f"deleted {plan.kind} {name}: the model does not fit its GPU class")]
    if plan.action != "apply":
        return []
    assert plan.manifest is not None
    if live is None:
        if created_before:
            return [Event("Warning", RECREATED, f"{plan.kind} {name} was deleted; recreated it")]
        return []
    if _hash_of(live) != _hash_of(plan.manifest):
        return [Event("Normal", UPDATED, f"updated {plan.kind} {name}: {_paths(plan.drift)}")]
    return [Event("Warning", DRIFT_CORRECTED, f"{plan.kind} {name} was changed by someone else at "
                                               f"{_paths(plan.drift)}; restored it")]


def _pool(spec: ImageModelDeploymentSpec, owner: Owner, observed: Observed,
          picker: EndpointPicker) -> tuple[ChildPlan, s.Verdict | None]:
    """The InferencePool's plan and InferencePoolReady (None: the resource asks for no pool)."""
    wanted = spec.routing is not None and spec.routing.inference_pool is not None and spec.routing.inference_pool.enabled
    live = observed.inference_pool
    if not observed.pool_crd_installed:
        message = (f"spec.routing.inferencePool.enabled is true, but the InferencePool CRD ({CRD_NAME}, v1) "
                   "is not installed in this cluster: install the Gateway API Inference Extension")
        return ChildPlan(INFERENCE_POOL, "none"), (c.FALSE, s.CRD_NOT_INSTALLED, message) if wanted else None
    if live is not None and controller_uid(live) != owner.uid:
        message = f"InferencePool {owner.name} already exists and {_not_ours(live)}: rename or remove it"
        return ChildPlan(INFERENCE_POOL, "none"), (c.FALSE, s.NAME_CONFLICT, message) if wanted else None
    if not wanted:
        child = child_plan(INFERENCE_POOL, None, live)
        events = [Event("Normal", DELETED, f"deleted InferencePool {owner.name}: "
                                           "spec.routing.inferencePool.enabled is no longer true")]
        return replace(child, events=tuple(events) if child.action == "delete" else ()), None
    manifest = with_spec_hash(build_inference_pool(owner, spec.tier, picker))
    child = child_plan(INFERENCE_POOL, manifest, live)
    details = (f"the runtime pods on port {RUNTIME_PORT}, endpoint picker Service {picker.service_for(owner.name)} "
               f"port {picker.port}")
    message = f"InferencePool {owner.name} selects {details}"
    events = child_events(child, live, owner.name, created_before=False)
    if child.action == "apply" and live is None:
        events.append(Event("Normal", CREATED, f"created InferencePool {owner.name}: {details}"))
    return replace(child, events=tuple(events)), (c.TRUE, s.POOL_CONFIGURED, message)


def disruption_budget_plan(disruption: DisruptionSpec | None, build: Callable[[DisruptionSpec], dict[str, Any]],
                           owner: Owner, child: str, pods: str, live: Mapping[str, Any] | None) -> ChildPlan:
    """A PodDisruptionBudget's plan: one while spec.disruption is set, none otherwise. A budget of that
    name that someone else owns is left alone. `child`: the budget's name; `pods`: what it covers, for
    its Event."""
    if live is not None and controller_uid(live) != owner.uid:
        return ChildPlan(DISRUPTION_BUDGET, "none")
    name = f"{DISRUPTION_BUDGET} {child}"
    if disruption is None:
        plan = child_plan(DISRUPTION_BUDGET, None, live)
        event = Event("Normal", DELETED, f"deleted {name}: spec.disruption was removed")
        return replace(plan, events=(event,) if plan.action == "delete" else ())
    plan = child_plan(DISRUPTION_BUDGET, with_spec_hash(build(disruption)), live)
    events = child_events(plan, live, child, created_before=False)
    if plan.action == "apply" and live is None:
        budget = (f"maxUnavailable {disruption.max_unavailable}" if disruption.max_unavailable is not None
                  else f"minAvailable {disruption.min_available}")
        events.append(Event("Normal", CREATED, f"created {name} over {pods}: {budget}"))
    return replace(plan, events=tuple(events))


def network_policy_plan(ingress: RuntimeIngress | None, build: Callable[[RuntimeIngress], dict[str, Any]],
                        owner: Owner, child: str, live: Mapping[str, Any] | None) -> ChildPlan:
    """A NetworkPolicy's plan: one while the operator is configured with runtime ingress peers, none
    otherwise. A policy of that name that someone else owns is left alone. `child`: the policy's name."""
    if live is not None and controller_uid(live) != owner.uid:
        return ChildPlan(NETWORK_POLICY, "none")
    plan = child_plan(NETWORK_POLICY, None if ingress is None else with_spec_hash(build(ingress)), live)
    events = child_events(plan, live, child, created_before=False)
    if plan.action == "apply" and live is None:
        events.append(Event("Normal", CREATED, f"created {NETWORK_POLICY} {child}: only the configured peers "
                                               "(the gateway, Prometheus) reach the runtime pods' ports"))
    return replace(plan, events=tuple(events))


_DETAIL_CONDITIONS = {c.ROUTING_VALID: s.OVERFLOW_TARGET_VALID, c.INFERENCE_POOL_READY: INFERENCE_POOL + "Ready"}


def _detail_events(old: Any, new: list[Mapping[str, Any]]) -> list[Event]:
    """RoutingValid and InferencePoolReady: a Warning when one turns False or its reason changes while
    False, a Normal Event when one turns True after False."""
    events = []
    for condition in new:
        type_ = condition["type"]
        if type_ not in _DETAIL_CONDITIONS:
            continue
        before = c.find(old, type_)
        status, reason, message = condition["status"], condition["reason"], condition["message"]
        if status == c.FALSE and (before is None or (before.get("status"), before.get("reason")) != (status, reason)):
            events.append(Event("Warning", reason, message))
        elif status == c.TRUE and before is not None and before.get("status") == c.FALSE:
            events.append(Event("Normal", _DETAIL_CONDITIONS[type_], message))
    return events


def condition_events(old: Any, new: list[Mapping[str, Any]]) -> list[Event]:
    events = _detail_events(old, new)
    for type_, before, condition in c.transitions(old, new):
        status, reason, message = condition["status"], condition["reason"], condition["message"]
        if type_ == c.FITS_GPU and status == c.FALSE:
            events.append(Event("Warning", reason, message))
        elif type_ == c.FITS_GPU and status == c.TRUE and before == c.FALSE:
            events.append(Event("Normal", FITS_NOW, f"the model fits now: {message}"))
        elif type_ == c.READY and status == c.TRUE:
            events.append(Event("Normal", READY, message))
        elif type_ == c.READY and before == c.TRUE:
            kind: EventType = "Warning" if reason in _WARNING_READY_REASONS else "Normal"
            events.append(Event(kind, NOT_READY, f"{reason}: {message}"))
    return events


def _deprecation_events(spec: ImageModelDeploymentSpec, current: Mapping[str, Any], generation: Any) -> list[Event]:
    """A Warning once per generation that sets a deprecated field (a CRD schema cannot warn per field)."""
    delay_set = spec.batching is not None and spec.batching.max_delay_milliseconds is not None
    if not delay_set or current.get("observedGeneration") == generation:
        return []
    return [Event("Warning", DEPRECATED_FIELD, "spec.batching.maxDelayMilliseconds is deprecated and has no effect: "
                  "continuous batching starts a request at once on an idle replica and puts every waiting "
                  "compatible request into the next batch; remove the field")]


def invalid_spec(obj: Mapping[str, Any], error: ValidationError,
                 timestamp: str | None) -> tuple[dict[str, Any] | None, tuple[Event, ...]]:
    """Ready=False InvalidSpec for a spec the API server accepted but the operator cannot read (an
    older or newer CRD): the status to apply and its Event, or (None, ()) when it says so already."""
    current = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    message = f"the operator cannot read the spec: {error}".replace("\n", " ")[:1024]
    ready = c.make(c.READY, c.FALSE, INVALID_SPEC, message, generation=generation,
                   previous=c.find(current.get("conditions"), c.READY), timestamp=timestamp)
    wanted = {"observedGeneration": generation, "conditions": [ready]}
    if not s.needs_apply(current, wanted):
        return None, ()
    return wanted, (Event("Warning", INVALID_SPEC, message),)


def _member_plan(observed: Observed, spec: ImageModelDeploymentSpec, owner: Owner,
                 timestamp: str | None) -> Plan:
    """A pool member: none of its own children (one left from before it joined is deleted), and a status
    that follows the pool."""
    assert spec.pool is not None
    imd = observed.imd
    current = imd.get("status") or {}
    wanted = member_status(current, owner.name, spec, observed.model_pool, observed.model_pool_deployment,
                           generation=imd["metadata"].get("generation"), timestamp=timestamp)

    def released(kind: str, live: Mapping[str, Any] | None) -> ChildPlan:
        if live is None or controller_uid(live) != owner.uid:
            return ChildPlan(kind, "none")
        child = child_plan(kind, None, live)
        event = Event("Normal", DELETED, f"deleted {kind} {owner.name}: the resource joined ImageModelPool "
                                         f"{spec.pool}, whose pods serve it")
        return replace(child, events=(event,) if child.action == "delete" else ())

    return Plan(
        released("Deployment", observed.deployment),
        released("Service", observed.service),
        wanted if s.needs_apply(current, wanted) else None,
        tuple(condition_events(current.get("conditions"), wanted["conditions"])),
        None,
        released(INFERENCE_POOL, observed.inference_pool),
        released(DISRUPTION_BUDGET, observed.disruption_budget),
        released(NETWORK_POLICY, observed.network_policy),
    )


def plan(observed: Observed, config: Config, timestamp: str | None = None) -> Plan:
    """What to write so that the children and the status match the spec."""
    imd = observed.imd
    metadata = imd["metadata"]
    owner = Owner(name=metadata["name"], namespace=metadata["namespace"], uid=metadata["uid"])
    generation = metadata.get("generation")
    current = imd.get("status") or {}
    try:
        spec = ImageModelDeploymentSpec.model_validate(imd.get("spec") or {})
    except ValidationError as error:
        wanted, events = invalid_spec(imd, error, timestamp)
        return Plan(ChildPlan("Deployment", "none"), ChildPlan("Service", "none"), wanted, events)
    if spec.pool is not None:
        return _member_plan(observed, spec, owner, timestamp)
    resolved: Resolved = resolve(spec, config.gpu_classes)
    fit: Fit = check_fit(resolved, config.gpu_classes)
    replicas = desired_replicas(spec, resolved.autoscaling, current, observed.deployment)

    foreign = [
        f"{kind} {owner.name} already exists and {_not_ours(live)}"
        for kind, live in (("Deployment", observed.deployment), ("Service", observed.service))
        if live is not None and controller_uid(live) != owner.uid
    ]
    if foreign:
        deployment_plan = ChildPlan("Deployment", "none")
        service_plan = ChildPlan("Service", "none")
        rollout = s.blocked(s.NAME_CONFLICT, "; ".join(foreign) + ": rename this resource or remove it")
    else:
        desired_deployment = None
        if fit.fits:
            desired_deployment = with_spec_hash(build_deployment(owner, resolved, replicas, config.runtime_image))
        deployment_plan = child_plan("Deployment", desired_deployment, observed.deployment)
        service_plan = child_plan("Service", with_spec_hash(build_service(owner, spec.tier)), observed.service)
        # No pods on a model cache that is not complete for this spec: a Deployment waits (an existing one
        # keeps its pods on the previous cache directory until the new one is filled).
        cache_wait = awaiting_cache(imd, spec) if fit.fits else None
        if cache_wait is not None:
            deployment_plan = ChildPlan("Deployment", "none")
        if cache_wait is not None and observed.deployment is None:
            rollout = s.Rollout((c.FALSE, AWAITING_MODEL_CACHE, cache_wait), (c.TRUE, AWAITING_MODEL_CACHE, cache_wait))
        elif fit.fits:
            rollout = s.rollout_of(
                observed.deployment, applying=deployment_plan.action == "apply", desired=replicas
            )
        else:
            rollout = s.blocked(s.DOES_NOT_FIT, f"nothing is scheduled: {fit.reason} (see the FitsGPU condition)")

    pool_plan, pool_verdict = _pool(spec, owner, observed, config.endpoint_picker)
    wanted = s.operator_status(
        current,
        generation=generation,
        fit=fit,
        rollout=rollout,
        deployment=None if deployment_plan.action == "delete" else observed.deployment,
        autoscaling=resolved.autoscaling.enabled,
        desired_replicas=None if resolved.autoscaling.enabled else replicas,
        selector=selector_string(owner.name),
        details=[(type_, verdict) for type_, verdict in (
            (c.ROUTING_VALID, s.routing_verdict(
                owner.name, spec.routing.overflow_to if spec.routing else None, observed.overflow_problem)),
            (c.INFERENCE_POOL_READY, pool_verdict),
        ) if verdict is not None],
        timestamp=timestamp,
    )
    # Whether the children were made before (so a missing one was deleted by someone).
    progressing = c.find(current.get("conditions"), c.PROGRESSING)
    created_before = progressing is not None and progressing.get("reason") not in _NOT_CREATED_REASONS
    deployment_events = child_events(deployment_plan, observed.deployment, owner.name, created_before)
    if deployment_plan.action == "apply" and observed.deployment is None and not created_before:
        deployment_events.append(Event(
            "Normal", CREATED, f"created Deployment and Service {owner.name}: {replicas} "
            f"replica{'' if replicas == 1 else 's'} of {spec.model.name} at {resolved.precision} on {spec.gpu_class}",
        ))
    if observed.free_gpus is not None and resolved.gpu_class is not None and any(
        path.startswith(".spec.template") for path in deployment_plan.drift
    ):
        blocked = surge_blocked_message(spec.rollout, replicas, resolved.gpu_class, observed.free_gpus)
        if blocked is not None:
            deployment_events.append(Event("Warning", ROLLOUT_BLOCKED, blocked))
    service_events = child_events(service_plan, observed.service, owner.name, created_before)
    return Plan(
        replace(deployment_plan, events=tuple(deployment_events)),
        replace(service_plan, events=tuple(service_events)),
        wanted if s.needs_apply(current, wanted) else None,
        tuple(_deprecation_events(spec, current, generation)
              + condition_events(current.get("conditions"), wanted["conditions"])),
        s.initial_metrics_condition(current, autoscaling=resolved.autoscaling.enabled, generation=generation,
                                    timestamp=timestamp),
        pool_plan,
        disruption_budget_plan(spec.disruption, lambda d: build_pod_disruption_budget(owner, spec.tier, d), owner,
                               owner.name, "the runtime pods", observed.disruption_budget),
        network_policy_plan(config.runtime_ingress, lambda i: build_network_policy(owner, spec.tier, i), owner,
                            owner.name, observed.network_policy),
    )
