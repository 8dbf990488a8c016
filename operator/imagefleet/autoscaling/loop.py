"""Observe -> decide -> act for one autoscaled ImageModelDeployment.

Observe: the Deployment's replicas, Prometheus's readings (over a window of at
least four scrape intervals, read from Prometheus's targets), the free GPUs of
the class, and the gateway's demand (the imagefleet.io/demand-at annotation).
The Deployment and the GPUs come from a `Fleet`: kopf's watch-fed indexes in the
operator (`ListedFleet`, a GET and two LISTs, where there is no watch). The
readings come from a round shared by every resource evaluated in the same
interval (`batch.read_round`: one query per signal for the whole fleet), started
by `evaluate_round`, which the operator calls once per interval with every
autoscaled resource. Decide: `policy.decide`. Act, writing only what changed and in this order: the
Deployment's spec.replicas (an urgent write: it goes ahead of the operator's other
writes waiting for the write limiter), the status, then an Event when the count
changed. A reconcile keeps the live Deployment's count (`reconcile.plan.desired_replicas`),
so it never undoes the patch, whichever lands first. The user's spec is never written.
Evaluations of one resource never overlap (a round and a demand wake-up may meet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Histogram
from pydantic import ValidationError

from .. import POOL_KIND
from .. import conditions as c
from ..builders.pool import pool_child_name
from ..catalog import GPUClass, model_catalog
from ..cost import EmulationError, builtin_plan, call_seconds
from ..crd.models import ImageModelDeploymentSpec, ImageModelPoolSpec
from ..residency.pricing import checkpoint_mib, swap_cost
from ..kube import Kube, KubeError, is_newer
from ..pool.sizing import WORKING_SET_SECONDS, working_set
from ..tiers import Autoscaling, effective_autoscaling
from . import queries
from .batch import Key, Round, read_round
from .capacity import ACTIVE_PODS, ClassUsage, NodeGPUs, PodGPUs, class_usage, node_gpus, pod_gpus
from .policy import (
    CAPACITY,
    LATENCY,
    METRICS_STALE,
    PARTIAL_METRICS,
    QUEUE,
    SCALED_FROM_ZERO,
    SCALED_TO_ZERO,
    UTILIZATION,
    WINDOW_INTERVALS,
    Decision,
    History,
    Observation,
    Targets,
    decide,
    idle_service_seconds,
)
from .pool_members import (
    MemberUsage,
    member_owned_status,
    member_status_patch,
    member_usage,
    read_verdict,
    reporting_pods,
    residency_key,
)
from .pool_scaling import (
    POOL_WOKEN,
    MemberSignal,
    MixSwapPrices,
    PoolDecision,
    PoolInputs,
    decide_pool,
    host_per_pod,
    mix_swap_prices,
    resident_per_pod,
)
from .prometheus import PrometheusClient, PrometheusError, PrometheusUnavailable

SCALING = "Scaling"
SCALING_LIMITED = "ScalingLimited"
# MetricsAvailable reasons.
METRICS_FOUND = "MetricsFound"
NO_METRICS = "NoMetrics"
PROMETHEUS_NOT_CONFIGURED = "PrometheusNotConfigured"
PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
# The resource's demand source is the gateway, but no gateway series came: the pods' signals alone.
NO_GATEWAY_DEMAND = "NoGatewayDemand"
# How MetricsAvailable's message begins when the gateway's demand series were part of the reading.
GATEWAY_DEMAND_READ = "the gateway's demand"
QUERY_FAILED = "QueryFailed"
SERIES_COLLIDE = "SeriesCollide"
RATE_WINDOW_TOO_SHORT = "RateWindowTooShort"
# ScalingLimited reason when no limit cut the recommendation.
WITHIN_LIMITS = "WithinLimits"
# Whether scaling can reach the p95 target at all.
LATENCY_TARGET_REACHABLE = "LatencyTargetReachable"
ABOVE_SERVICE_TIME = "AboveServiceTime"
BELOW_SERVICE_TIME = "BelowServiceTime"
# `kubectl scale imd` while autoscaling is on.
MANUAL_SCALING = "ManualScaling"
MANUAL_SCALE_IGNORED = "ManualScaleIgnored"

# The gateway's annotation: when it last held a request for a resource it could not serve.
DEMAND_ANNOTATION = "imagefleet.io/demand-at"
# How long Prometheus's scrape intervals are trusted before they are read again.
TARGETS_TTL_SECONDS = 60.0

FIELD_MANAGER = "imagefleet-autoscaler"
CLOSE_TIMEOUT_SECONDS = 10.0
# Wake a little after an interval starts, so that every evaluation falls in the same one.
ROUND_MARGIN_SECONDS = 0.05

# Served on the operator's /metrics (handlers.metrics registers it).
ROUND_SECONDS = Histogram(
    "imagefleet_autoscaler_round_duration_seconds",
    "One autoscaling round: every autoscaled resource read, decided and acted on",
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120),
    registry=None,
)

# The line each round logs, as `evaluate_round` writes it (benchmarks/fleet_scale.py reads it back).
ROUND_LINE = re.compile(
    r"autoscaling round: (?P<resources>\d+) resources in (?P<seconds>[\d.]+) s \(it began [\d.]+ s into its "
    r"interval; Prometheus read (?P<read>[\d.]+) s\), (?P<scaled>\d+) Deployments scaled"
)

logger = logging.getLogger(__name__)


def targets_of(
    settings: Autoscaling, interval_seconds: float, *, scrape_interval_seconds: float | None = None,
    demand_source: str | None = None,
) -> Targets:
    """The policy's targets from the effective (tier-filled) autoscaling settings.

    The rate window spans four evaluation intervals and at least four scrape
    intervals. Without a demand source the floor is one replica, whatever an
    object stored before the API server refused minReplicas 0 says.
    """
    scrape = scrape_interval_seconds or 0.0
    return Targets(
        min_replicas=settings.min_replicas if demand_source else max(1, settings.min_replicas),
        max_replicas=settings.max_replicas,
        target_queue_depth=settings.target_queue_depth,
        target_p95_seconds=settings.target_p95_seconds,
        scale_up_stabilization_seconds=settings.scale_up_stabilization_seconds,
        scale_down_stabilization_seconds=settings.scale_down_stabilization_seconds,
        latency_window_seconds=WINDOW_INTERVALS * max(interval_seconds, scrape),
        scale_to_zero=demand_source is not None,
    )


def demand_age_seconds(annotations: Mapping[str, str] | None, now: datetime) -> float | None:
    """Seconds since the gateway's demand-at annotation; None when absent or not an RFC 3339 time."""
    value = (annotations or {}).get(DEMAND_ANNOTATION)
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        logger.warning("ignoring %s=%r: not an RFC 3339 timestamp", DEMAND_ANNOTATION, value)
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (now - at).total_seconds()


class Fleet(Protocol):
    """Where the autoscaler reads a resource's Deployment, the GPUs in use, and the newest copy of a resource."""

    async def deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def resource(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The newest copy of the ImageModelDeployment known without a request (None: only the caller's)."""
        ...

    async def gpus(self) -> tuple[Iterable[NodeGPUs], Iterable[PodGPUs]]: ...


class ListedFleet:
    """Reads from the API server on every call: for callers without watches (tests, tools)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.kube.get("Deployment", namespace, name)

    def resource(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    async def gpus(self) -> tuple[Iterable[NodeGPUs], Iterable[PodGPUs]]:
        nodes = await self.kube.request("GET", "/api/v1/nodes")
        pods = await self.kube.request("GET", "/api/v1/pods", query={"fieldSelector": ACTIVE_PODS})
        used = (pod_gpus(pod) for pod in pods.get("items", []))
        return [node_gpus(node) for node in nodes.get("items", [])], [pod for pod in used if pod is not None]


@dataclass(frozen=True)
class Metrics:
    readings: queries.Readings
    # (reason, message) when the readings could not be taken.
    failure: tuple[str, str] | None = None
    # The rate window and where its length came from, for MetricsAvailable's message.
    window: str = ""


@dataclass(frozen=True)
class PoolWork:
    """An autoscaled ImageModelPool and its members, as a round evaluates them."""

    pool: Mapping[str, Any]
    members: tuple[Mapping[str, Any], ...]


class Autoscaler:
    """Evaluates resources one at a time; remembers each one's policy history by uid."""

    def __init__(
        self,
        kube: Kube,
        prometheus: PrometheusClient | None,
        gpu_classes: Mapping[str, GPUClass],
        *,
        interval_seconds: float,
        fleet: Fleet | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.fleet: Fleet = fleet or ListedFleet(kube)
        self.interval_seconds = interval_seconds
        self.prometheus = prometheus
        self.gpu_classes = gpu_classes
        self.clock = clock
        self.instance = socket.gethostname()
        self._histories: dict[str, History] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._scrape_intervals: dict[tuple[str, str], float] = {}
        # When the scrape intervals were last read, and that read.
        self._targets: tuple[float, asyncio.Future[None]] | None = None
        # The autoscaled resources by uid, and this interval's batched read per rate window.
        self._keys: dict[str, Key] = {}
        self._rounds: dict[float, tuple[int, asyncio.Future[Round]]] = {}
        # This interval's GPU usage per class: counted once, not once per resource.
        self._usages: dict[str, tuple[int, asyncio.Future[ClassUsage | None]]] = {}
        # Per uid: the demand-at value last acted on, and the spec.replicas last seen.
        self._woken_by: dict[str, str] = {}
        self._spec_replicas: dict[str, int] = {}
        # Per uid: when an evaluation first saw a ready pod (the first write waits a window for its series).
        self._ready_since: dict[str, float] = {}
        # Per uid: the resource as the autoscaler's last status write returned it.
        self._written: dict[str, Mapping[str, Any]] = {}
        # The pools' members and pods in this interval's round (their series come with the resources'),
        # and each pool's recommendations within its scale-down window, by uid.
        self._pool_keys: set[Key] = set()
        self._pool_histories: dict[str, tuple[tuple[float, int], ...]] = {}
        # Per pool uid: each checkpoint's latest demand (the autoscaler's clock), for the pool's working set.
        self._pool_asked: dict[str, dict[str, float]] = {}
        self._pool_locks: dict[str, asyncio.Lock] = {}
        self._closed = False
        self._in_flight = 0
        self._scaled = 0  # Deployment patches sent, ever (a round logs how many it sent)
        self._idle = asyncio.Event()
        self._idle.set()

    async def aclose(self) -> None:
        """Let evaluations in flight finish (up to 10 s), then close the clients.

        Later evaluations do nothing: kopf may run a handler past the cleanup.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("closing the autoscaler with %d evaluations still running", self._in_flight)
        if self.prometheus is not None:
            await self.prometheus.aclose()
        self.kube.close()

    def next_round_in(self) -> float:
        """Seconds until the next interval starts: evaluations that start together share one batched read."""
        return self.interval_seconds - self.clock() % self.interval_seconds + ROUND_MARGIN_SECONDS

    async def evaluate_round(self, resources: Sequence[Mapping[str, Any]],
                             pools: Sequence[PoolWork] = ()) -> list[Decision | None]:
        """One interval's round: every autoscaled resource and pool decided from one batched read.

        A resource not in `resources` any more (autoscaling turned off, deleted) is
        forgotten. One resource's failure is logged and does not stop the others.
        """
        self._keys = {resource["metadata"]["uid"]: (resource["metadata"]["namespace"], resource["metadata"]["name"])
                      for resource in resources}
        self._pool_keys = {key for work in pools for key in _pool_keys(work)}
        pool_uids = {work.pool["metadata"]["uid"] for work in pools}
        for uid in set(self._pool_histories) - pool_uids:
            del self._pool_histories[uid]
        for uid in set(self._pool_asked) - pool_uids:
            del self._pool_asked[uid]
        for uid in set(self._pool_locks) - pool_uids:
            del self._pool_locks[uid]
        known = (set(self._histories) | set(self._locks) | set(self._woken_by) | set(self._spec_replicas)
                 | set(self._ready_since) | set(self._written))
        members = {member["metadata"]["uid"] for work in pools for member in work.members}
        for uid in known - set(self._keys) - members:
            self.forget(uid)
        started, scaled_before = self.clock(), self._scaled
        slot = math.floor(started / self.interval_seconds)
        decisions, _ = await asyncio.gather(
            asyncio.gather(*(self._evaluate_or_log(resource) for resource in resources)),
            asyncio.gather(*(self._evaluate_pool_or_log(work) for work in pools)),
        )
        took = self.clock() - started
        ROUND_SECONDS.observe(took)
        read = max((task.result().seconds for at, task in self._rounds.values()
                    if at == slot and task.done() and not task.cancelled() and task.exception() is None), default=0.0)
        log = logger.warning if took > self.interval_seconds else logger.info
        log("autoscaling round: %d resources in %.2f s (it began %.2f s into its interval; Prometheus read %.2f s), "
            "%d Deployments scaled%s",
            len(resources), took, started % self.interval_seconds, read, self._scaled - scaled_before,
            f"; longer than the {self.interval_seconds:g} s interval, so the next interval has no round"
            if took > self.interval_seconds else "")
        return list(decisions)

    async def _evaluate_pool_or_log(self, work: PoolWork) -> PoolDecision | None:
        try:
            return await self.evaluate_pool(work)
        except (KubeError, ValidationError, PrometheusError) as error:
            metadata = work.pool["metadata"]
            logger.warning("pool %s/%s: autoscaling skipped this interval: %s", metadata["namespace"],
                           metadata["name"], error)
        except Exception:  # noqa: BLE001 - one pool's bug must not stop the round
            metadata = work.pool["metadata"]
            logger.exception("pool %s/%s: autoscaling failed this interval", metadata["namespace"], metadata["name"])
        return None

    async def wake_pool(self, pool: Mapping[str, Any], member: Mapping[str, Any]) -> bool:
        """Between rounds: fresh gateway demand on `member` (its imagefleet.io/demand-at) wakes its pool at zero
        at once, to minReplicas or one pod; the next round sizes it. Whether it woke the pool."""
        if self._closed:
            return False
        metadata = pool["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        spec = ImageModelPoolSpec.model_validate(pool["spec"])
        age = demand_age_seconds(member["metadata"].get("annotations"), datetime.now(UTC))
        if not spec.autoscaling.enabled or age is None or age > WINDOW_INTERVALS * self.interval_seconds:
            return False
        async with self._pool_locks.setdefault(uid, asyncio.Lock()):
            deployment = await self.fleet.deployment(namespace, pool_child_name(name))
            if deployment is None or not _controlled_by(deployment, uid) or deployment["spec"].get("replicas"):
                return False
            desired = max(1, spec.autoscaling.min_replicas)
            await self.kube.request(
                "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{pool_child_name(name)}",
                body={"spec": {"replicas": desired}}, content_type="application/merge-patch+json",
                query={"fieldManager": FIELD_MANAGER}, urgent=True,
            )
            self._scaled += 1
            now = datetime.now(UTC)
            status = pool.get("status") or {}
            await self.kube.apply_status(namespace, name, {
                "desiredReplicas": desired, "lastScaleTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                **({"autoscaling": status["autoscaling"]} if status.get("autoscaling") else {}),
            }, FIELD_MANAGER, kind=POOL_KIND)
            message = (f"pool woken to {desired} pod{'' if desired == 1 else 's'}: the gateway holds requests for "
                       f"member {member['metadata']['name']}")
            await self.kube.post_event(pool, "Normal", POOL_WOKEN, message, self.instance)
            logger.info("pool %s/%s: %s", namespace, name, message)
            return True

    async def evaluate_pool(self, work: PoolWork) -> PoolDecision | None:
        """One pool: its members' gateway demand and its pods' batch time from this interval's round (no
        query of its own), decided by `pool_scaling.decide_pool`, then the Deployment's replicas, the pool's
        status and an Event; and, autoscaled or not, each member's residency, requests and p95. None when
        there is nothing to scale (off, closed, no Deployment of its own)."""
        if self._closed:
            return None
        async with self._pool_locks.setdefault(work.pool["metadata"]["uid"], asyncio.Lock()):
            return await self._evaluate_pool(work)

    async def _evaluate_pool(self, work: PoolWork) -> PoolDecision | None:
        metadata = work.pool["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        spec = ImageModelPoolSpec.model_validate(work.pool["spec"])
        child = pool_child_name(name)
        deployment = await self.fleet.deployment(namespace, child)
        if deployment is None or not _controlled_by(deployment, uid):
            return None
        scaled = spec.autoscaling.enabled
        replicas = int(deployment.get("spec", {}).get("replicas", 1))
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        scrape = await self._scrape_interval(namespace, child) if replicas else None
        window = WINDOW_INTERVALS * max(self.interval_seconds, scrape or 0.0)
        if self.prometheus is None:
            message = "IMAGEFLEET_PROMETHEUS_URL is not set: a pool is sized from its members' gateway demand"
            await self._member_statuses(work, None, (c.FALSE, PROMETHEUS_NOT_CONFIGURED, message))
            if not scaled:
                return None
            raise PrometheusUnavailable(message)
        try:
            round_ = await self._round(window)
            failure = round_.failures.get((namespace, child))
            if failure is not None:
                raise failure
        except PrometheusError as error:
            reason = PROMETHEUS_UNREACHABLE if isinstance(error, PrometheusUnavailable) else QUERY_FAILED
            await self._member_statuses(work, None, (c.FALSE, reason, str(error)))
            raise
        now = datetime.now(UTC)
        signals = []
        usages = []
        resident = round_.resident((namespace, child))
        asked = self._pool_asked.setdefault(uid, {})
        for member in work.members:
            readings = round_.readings((namespace, member["metadata"]["name"]), window)
            member_spec = ImageModelDeploymentSpec.model_validate(member["spec"])
            key = residency_key(member_spec)
            usages.append(member_usage(resident, key, readings.gateway_arrival_rate, readings.gateway_p95_seconds))
            signals.append(MemberSignal(
                member["metadata"]["name"], readings.gateway_arrival_rate or 0.0, readings.gateway_queued or 0.0,
                effective_autoscaling(member_spec).target_p95_seconds,
                demand_age_seconds(member["metadata"].get("annotations"), now)))
            if signals[-1].arrival_rate > 0 or signals[-1].queued > 0:
                asked[key[0]] = self.clock()
        for checkpoint in [name for name, at in asked.items() if self.clock() - at > WORKING_SET_SECONDS]:
            del asked[checkpoint]
        verdict = read_verdict(reporting_pods(resident), ready, f"rate window {window:.0f}s")
        if not scaled:
            await self._member_statuses(work, usages, verdict)
            return None
        own = round_.readings((namespace, child), window)
        model = model_catalog()[spec.family]
        precision = spec.precision or model.precision.preferred
        status = work.pool.get("status") or {}
        mib = checkpoint_mib(model, precision)
        host_slots = host_per_pod(int(status.get("hostBudgetMiB") or 0), mib)
        # Without the GPU budget the reconcile writes, a pod's slots are unknown: no working-set floor.
        working = working_set(asked, self.clock()) if status.get("gpuBudgetMiB") else 0
        decision = decide_pool(PoolInputs(
            spec=spec, replicas=replicas, ready=ready, members=signals,
            service_seconds=_service_seconds(spec, precision, own.batch_seconds, own.batch_size),
            swap=_mix_swap_prices(spec.gpu_class, mib, host_slots > 0),
            resident_per_pod=resident_per_pod(int(status.get("gpuBudgetMiB") or 0), mib),
            host_per_pod=host_slots,
            window_seconds=window, working_set=working,
        ), self._pool_histories.get(uid, ()), self.clock())
        self._pool_histories[uid] = decision.history
        changed = decision.desired != replicas
        if changed:
            await self.kube.request(
                "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{child}",
                body={"spec": {"replicas": decision.desired}}, content_type="application/merge-patch+json",
                query={"fieldManager": FIELD_MANAGER}, urgent=True,
            )
            self._scaled += 1
        wanted = pool_status(status, decision, changed=changed, now=now)
        if wanted is not None:
            await self.kube.apply_status(namespace, name, wanted, FIELD_MANAGER, kind=POOL_KIND)
        if changed:
            await self.kube.post_event(work.pool, "Normal", decision.reason, decision.message, self.instance)
            logger.info("pool %s/%s: %s", namespace, name, decision.message)
        await self._member_statuses(work, usages, verdict)
        return decision

    async def _member_statuses(self, work: PoolWork, usages: Sequence[MemberUsage] | None,
                               verdict: tuple[str, str, str]) -> None:
        """Write each member's residency, requests and p95 (`pool_members`) where they changed; `usages`
        None: the round could not be read, as `verdict` says."""
        await asyncio.gather(*(
            self._patch_status(member, lambda status, member=member, usage=usage: member_status_patch(
                status, usage, verdict, generation=member["metadata"].get("generation")), member_owned_status)
            for member, usage in zip(work.members, usages or [None] * len(work.members), strict=True)
        ))

    async def _evaluate_or_log(self, resource: Mapping[str, Any]) -> Decision | None:
        try:
            return await self.evaluate(resource)
        except (KubeError, ValidationError) as error:
            metadata = resource["metadata"]
            logger.warning("%s/%s: autoscaling skipped this interval: %s", metadata["namespace"], metadata["name"],
                           error)
        except Exception:  # noqa: BLE001 - one resource's bug must not stop the round
            metadata = resource["metadata"]
            logger.exception("%s/%s: autoscaling failed this interval", metadata["namespace"], metadata["name"])
        return None

    def forget(self, uid: str) -> None:
        self._keys.pop(uid, None)
        self._histories.pop(uid, None)
        self._locks.pop(uid, None)
        self._woken_by.pop(uid, None)
        self._spec_replicas.pop(uid, None)
        self._ready_since.pop(uid, None)
        self._written.pop(uid, None)

    async def on_event(self, resource: Mapping[str, Any]) -> Decision | None:
        """Called on every watch event of an autoscaled resource, between the interval's evaluations.

        Fresh gateway demand on a resource at zero (or not yet decided) evaluates it at once
        (so 0 -> 1 does not wait for the interval); a changed spec.replicas (kubectl scale) is reported
        as ignored. Returns the wake-up's decision, None when there was none.
        """
        uid = resource["metadata"]["uid"]
        spec = resource.get("spec") or {}
        replicas = spec.get("replicas")
        seen = self._spec_replicas.get(uid)
        if isinstance(replicas, int):
            self._spec_replicas[uid] = replicas
            if seen is not None and seen != replicas:
                await self.manual_scale(resource, replicas)
        demand = (resource["metadata"].get("annotations") or {}).get(DEMAND_ANNOTATION)
        # At zero, or not decided yet: a new resource with minReplicas 0 starts at zero, and its
        # first request must not wait for the first round.
        at_zero = (resource.get("status") or {}).get("desiredReplicas") in (0, None)
        if not demand or not at_zero or self._woken_by.get(uid) == demand:
            return None
        if not (spec.get("autoscaling") or {}).get("demandSource"):
            return None
        self._woken_by[uid] = demand
        return await self.evaluate(resource)

    async def evaluate(self, resource: Mapping[str, Any]) -> Decision | None:
        """One evaluation; None when there is nothing to scale (off, closed, or no Deployment of ours yet)."""
        if self._closed:
            return None
        self._in_flight += 1
        self._idle.clear()
        try:
            lock = self._locks.setdefault(resource["metadata"]["uid"], asyncio.Lock())
            async with lock:
                return await self._evaluate(resource)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _evaluate(self, resource: Mapping[str, Any]) -> Decision | None:
        metadata = resource["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        spec = ImageModelDeploymentSpec.model_validate(resource["spec"])
        settings = effective_autoscaling(spec)
        if not settings.enabled:
            self.forget(uid)
            return None
        self._keys[uid] = (namespace, name)
        deployment = await self.fleet.deployment(namespace, name)
        if deployment is None or not _controlled_by(deployment, uid):
            return None
        replicas = int(deployment.get("spec", {}).get("replicas", 1))
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        demand_source = spec.autoscaling.demand_source
        # At zero there are no pods and so no series: nothing to read, and nothing to wait for.
        at_zero = replicas == 0 and demand_source is not None and settings.min_replicas == 0
        scrape = None if at_zero else await self._scrape_interval(namespace, name)
        targets = targets_of(settings, self.interval_seconds, scrape_interval_seconds=scrape,
                             demand_source=demand_source)
        metrics = Metrics(queries.Readings(None, None, None, None)) if at_zero else await self._metrics(
            namespace, name, targets, scrape
        )
        gpu_class = self.gpu_classes.get(spec.gpu_class)
        usage = None if gpu_class is None or gpu_class.gpu_resource is None else await self._usage(gpu_class)
        capacity = None if usage is None else usage.replicas(namespace, name)
        readings = metrics.readings
        decision = decide(
            Observation(
                time=self.clock(),
                replicas=replicas,
                ready_replicas=ready,
                queue_depth=readings.queue_depth,
                p95_seconds=readings.p95_seconds,
                busy_replicas=readings.busy_replicas,
                metrics_age_seconds=readings.age_seconds,
                queue_series=readings.queue_series,
                served_rate=readings.served_rate,
                batch_seconds=readings.batch_seconds,
                batch_size=readings.batch_size,
                capacity=capacity,
                demand_age_seconds=demand_age_seconds(metadata.get("annotations"), datetime.now(UTC)),
                error=None if metrics.failure is None else metrics.failure[1],
                gateway_arrival_rate=readings.gateway_arrival_rate,
                gateway_queued=readings.gateway_queued,
            ),
            targets,
            self._histories.get(uid, History()),
        )
        self._histories[uid] = decision.history
        now = self.clock()
        ready_since = self._ready_since.setdefault(uid, now) if ready else now
        if nothing_to_report_yet(resource, decision, metrics, replicas=replicas, ready=ready,
                                 ready_for_seconds=now - ready_since, grace_seconds=targets.latency_window_seconds):
            return decision
        changed = decision.desired != replicas
        if changed:
            await self.kube.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                body={"spec": {"replicas": decision.desired}},
                content_type="application/merge-patch+json",
                query={"fieldManager": FIELD_MANAGER},
                urgent=True,
            )
            self._scaled += 1
        await self._write_status(resource, decision, metrics, changed=changed)
        if changed:
            await self.kube.post_event(resource, "Normal", decision.reason, decision.message, self.instance)
            logger.info("%s/%s: %s", namespace, name, decision.message)
        return decision

    async def manual_scale(self, resource: Mapping[str, Any], replicas: int) -> None:
        """spec.replicas changed (kubectl scale) while autoscaling is on: say that it is ignored.

        A Warning Event and ManualScaling=True ManualScaleIgnored; the autoscaler keeps
        owning the count.
        """
        if self._closed:
            return
        status = resource.get("status") or {}
        message = (
            f"spec.replicas was set to {replicas} (kubectl scale) while autoscaling is on: ignored, the "
            f"autoscaler owns the replica count (now {status.get('desiredReplicas', 'not yet decided')}). "
            "Change spec.autoscaling.minReplicas/maxReplicas, or set spec.autoscaling.enabled=false to scale by hand"
        )
        await self.kube.post_event(resource, "Warning", MANUAL_SCALE_IGNORED, message, self.instance)
        generation = resource["metadata"].get("generation")
        await self._patch_status(
            resource,
            lambda current: {"conditions": c.set_condition(
                current.get("conditions"), MANUAL_SCALING, c.TRUE, MANUAL_SCALE_IGNORED, message,
                generation=generation,
            )},
        )

    async def _scrape_interval(self, namespace: str, name: str) -> float | None:
        """The longest scrape interval of the resource's targets (None: unknown), re-read every minute."""
        if self.prometheus is None:
            return None
        now = self.clock()
        if self._targets is None or now - self._targets[0] >= TARGETS_TTL_SECONDS:
            # One read for every evaluation that needs it now, not one each.
            self._targets = (now, asyncio.ensure_future(self._read_scrape_intervals()))
        await asyncio.shield(self._targets[1])
        return self._scrape_intervals.get((namespace, name))

    async def _read_scrape_intervals(self) -> None:
        assert self.prometheus is not None
        try:
            self._scrape_intervals = queries.scrape_intervals(await self.prometheus.active_targets())
        except PrometheusError as error:
            logger.warning("cannot read Prometheus's scrape intervals: %s", error)

    async def _metrics(self, namespace: str, name: str, targets: Targets, scrape: float | None) -> Metrics:
        empty = queries.Readings(None, None, None, None)
        window = targets.latency_window_seconds
        source = (
            f"rate window {window:.0f}s: 4 x the {scrape:g}s scrape interval"
            if scrape is not None and scrape >= self.interval_seconds
            else f"rate window {window:.0f}s: 4 x the {self.interval_seconds:g}s evaluation interval"
            + ("" if scrape is not None else " (scrape interval not found in Prometheus's targets)")
        )
        if self.prometheus is None:
            return Metrics(empty, (PROMETHEUS_NOT_CONFIGURED, "IMAGEFLEET_PROMETHEUS_URL is not set"), source)
        key = (namespace, name)
        try:
            batch = await self._round(window)
            if not batch.covers(key):  # it became autoscaled after the round split its resources
                batch = await read_round(self.prometheus, window, [key], split_from_start=True)
            failure = batch.failures.get(key)
            if failure is not None:
                raise failure
        except PrometheusUnavailable as error:
            return Metrics(empty, (PROMETHEUS_UNREACHABLE, str(error)), source)
        except PrometheusError as error:
            return Metrics(empty, (QUERY_FAILED, str(error)), source)
        collision = batch.collision(key)
        if collision is not None:
            return Metrics(empty, (SERIES_COLLIDE, collision), source)
        readings = batch.readings(key, targets.max_metric_age_seconds)
        if (
            readings.window_samples is not None
            and readings.window_samples < queries.MIN_WINDOW_SAMPLES
            and readings.queue_series
        ):
            message = (
                f"the {window:.0f}s rate window holds {readings.window_samples:.0f} sample of any pod: too short "
                "for the scrape interval, so latency and busy time cannot be read (not taken as no traffic)"
            )
            return Metrics(empty, (RATE_WINDOW_TOO_SHORT, message), source)
        return Metrics(readings, None, source)

    async def _round(self, window: float) -> Round:
        """This interval's batched read for `window`: the first evaluation starts it, the others await it."""
        assert self.prometheus is not None
        slot = math.floor(self.clock() / self.interval_seconds)
        cached = self._rounds.get(window)
        if cached is None or cached[0] != slot:
            keys = sorted(set(self._keys.values()) | self._pool_keys)
            task = asyncio.ensure_future(read_round(self.prometheus, window, keys, pools=bool(self._pool_keys)))
            # Retrieved by every waiter; a failure is theirs to report, not an unretrieved exception.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            cached = self._rounds[window] = (slot, task)
        return await asyncio.shield(cached[1])

    async def _usage(self, gpu_class: GPUClass) -> ClassUsage | None:
        """This interval's usage of the class: the first evaluation counts it, the others reuse it."""
        slot = math.floor(self.clock() / self.interval_seconds)
        cached = self._usages.get(gpu_class.name)
        if cached is None or cached[0] != slot:

            async def count() -> ClassUsage | None:
                return class_usage(*await self.fleet.gpus(), gpu_class)

            task = asyncio.ensure_future(count())
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            cached = self._usages[gpu_class.name] = (slot, task)
        return await asyncio.shield(cached[1])

    async def _write_status(
        self, resource: Mapping[str, Any], decision: Decision, metrics: Metrics, *, changed: bool
    ) -> None:
        demand_source = ((resource.get("spec") or {}).get("autoscaling") or {}).get("demandSource")
        await self._patch_status(
            resource,
            lambda status: status_patch(status, decision, metrics, generation=resource["metadata"].get("generation"),
                                        changed=changed, demand_source=demand_source),
        )

    async def _patch_status(
        self, resource: Mapping[str, Any], make: Callable[[Mapping[str, Any]], dict[str, Any] | None],
        owned: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Write the autoscaler's status fields when `make(current status)` finds a change.

        A server-side apply of all of the autoscaler's fields (`owned_status`), under
        its own field manager: conditions are a list map keyed by type, so the apply
        leaves the operator's conditions alone with no precondition to conflict on (a
        merge patch would replace the whole list, and a resourceVersion precondition
        conflicts whenever the operator wrote status while this write waited for its
        token). `current` is the newer of the fleet's copy and the response to the
        autoscaler's last write (a watch that lags an interval behind would otherwise
        have it write the same fields again), so "nothing changed" is judged against
        what was last written. `owned`: the fields the apply sets (default `owned_status`; a pool
        member's are fewer).
        """
        metadata = resource["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata.get("uid", "")
        newest = self.fleet.resource(namespace, name)
        current = newest if newest is not None and newest["metadata"].get("uid") == uid else resource
        written = self._written.get(uid)
        if written is not None and is_newer(written, current):
            current = written  # the watch has not shown our last write yet
        status = current.get("status") or {}
        patch = make(status)
        if patch is None:
            return
        self._written[uid] = await self.kube.apply_status(
            namespace, name, (owned or owned_status)(merge_patched(status, patch)), FIELD_MANAGER
        )


def _pool_keys(work: PoolWork) -> list[Key]:
    """The series a pool is sized from: its members' (the gateway's demand) and its pods' (batch time)."""
    namespace, name = work.pool["metadata"]["namespace"], work.pool["metadata"]["name"]
    return [(namespace, pool_child_name(name)), *((namespace, member["metadata"]["name"]) for member in work.members)]


def _service_seconds(spec: ImageModelPoolSpec, precision: Any, batch_seconds: float | None,
                     batch_size: float | None) -> float:
    """GPU-seconds one request takes: the pool pods' seconds per image when they report it, else the
    catalog's cost model for one image of the family at its default size and steps (1 s without figures)."""
    if batch_seconds and batch_size:
        return batch_seconds / batch_size
    defaults = model_catalog()[spec.family].defaults
    try:
        plan = builtin_plan(model=spec.family, gpu_class=spec.gpu_class, precision=precision)
    except EmulationError:
        return 1.0
    return call_seconds(plan, width=defaults.width, height=defaults.height, steps=defaults.steps, images=1)


def _mix_swap_prices(gpu_class: str, checkpoint_mib: float, keeps_host: bool) -> MixSwapPrices:
    """What a checkpoint swap of the family costs on the class, from host RAM and from disk (the residency
    model's, as the replay charges it); free where the catalog has no swap figures for the class."""
    try:
        cost = swap_cost(gpu_class)
    except KeyError:
        return MixSwapPrices(0.0, 0.0)
    return mix_swap_prices(cost, checkpoint_mib, keeps_host)


def pool_status(status: Mapping[str, Any], decision: PoolDecision, *, changed: bool,
                now: datetime) -> dict[str, Any] | None:
    """The autoscaler's fields of a pool's status (all of them: its apply removes one left out); None when
    they already say this."""
    size = decision.size
    wanted: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "autoscaling": {"demandGpuSeconds": _round(size.demand_gpu_seconds, 3),
                        "swapSeconds": _round(size.swap_seconds, 3), "activeMembers": decision.active_members},
    }
    last = now.strftime("%Y-%m-%dT%H:%M:%SZ") if changed else status.get("lastScaleTime")
    if last is not None:
        wanted["lastScaleTime"] = last
    current = {key: status.get(key) for key in wanted}
    return None if current == wanted else wanted


# The status the autoscaler owns (its apply sets all of them; one left out is removed). A pool member's are
# `pool_members.MEMBER_FIELDS`: each apply drops what the other kind of resource left.
OWNED_FIELDS = ("desiredReplicas", "queueDepth", "p95Seconds", "lastScaleTime", "autoscaling")
OWNED_CONDITIONS = (c.METRICS_AVAILABLE, SCALING, SCALING_LIMITED, LATENCY_TARGET_REACHABLE, MANUAL_SCALING)


def owned_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaler's fields and conditions of a status: the body of its server-side apply."""
    owned: dict[str, Any] = {key: status[key] for key in OWNED_FIELDS if status.get(key) not in (None, {})}
    owned["conditions"] = [condition for condition in status.get("conditions") or ()
                           if condition.get("type") in OWNED_CONDITIONS]
    return owned


def merge_patched(document: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` applied to `document` as a JSON merge patch (RFC 7386: null removes, lists replace)."""
    result = dict(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            base = result.get(key)
            result[key] = merge_patched(base if isinstance(base, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def status_patch(
    status: Mapping[str, Any], decision: Decision, metrics: Metrics, *, generation: int | None, changed: bool,
    demand_source: str | None = None,
) -> dict[str, Any] | None:
    """The autoscaler's status fields as they should be, as a merge patch; None when nothing differs."""
    readings = metrics.readings
    window = f" ({metrics.window})" if metrics.window else ""
    if decision.reason in (SCALED_TO_ZERO, SCALED_FROM_ZERO):
        available = (c.FALSE, decision.reason, f"no pods, so no series: {decision.message}")
    elif decision.metrics_available and decision.missing_series:
        available = (
            c.FALSE, PARTIAL_METRICS,
            f"{decision.missing_series} ready pods have no fresh queue-depth series: no scale-down{window}",
        )
    elif decision.metrics_available and demand_source is not None and not decision.gateway_demand:
        available = (
            c.TRUE, NO_GATEWAY_DEMAND,
            "no gateway demand series for this resource (the gateway is down, or not scraped): sized from the "
            f"pods' queue depth and latency alone{window}",
        )
    elif decision.metrics_available:
        source = f"{GATEWAY_DEMAND_READ}, the pods' " if decision.gateway_demand else ""
        available = (c.TRUE, METRICS_FOUND, f"{source}queue depth and latency read from Prometheus{window}")
    elif metrics.failure is not None:
        available = (c.FALSE, metrics.failure[0], decision.message + window)  # the message carries the failure
    else:
        available = (
            c.FALSE, METRICS_STALE if decision.reason == METRICS_STALE else NO_METRICS, decision.message + window
        )
    if decision.limited is None:
        limited = (c.FALSE, WITHIN_LIMITS, "the recommendation is within minReplicas, maxReplicas and free GPUs")
    else:
        limited = (c.TRUE, decision.limited, decision.message)
    scaling = (c.TRUE if changed else c.FALSE, decision.reason, decision.message)
    verdicts = [(c.METRICS_AVAILABLE, available), (SCALING, scaling), (SCALING_LIMITED, limited)]
    service = idle_service_seconds(readings.batch_seconds, readings.batch_size)
    if decision.latency_unreachable is not None:
        verdicts.append((LATENCY_TARGET_REACHABLE, (c.FALSE, BELOW_SERVICE_TIME, decision.latency_unreachable)))
    elif decision.metrics_available and service is not None:
        verdicts.append((LATENCY_TARGET_REACHABLE, (
            c.TRUE, ABOVE_SERVICE_TIME,
            f"the p95 target is above one request's time on an idle replica ({service:.2f}s)",
        )))
    conditions = status.get("conditions") or []
    for type_, (state, reason, message) in verdicts:
        conditions = c.set_condition(conditions, type_, state, reason, message, generation=generation)
    wanted: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "queueDepth": readings.queue_depth if decision.metrics_available else None,
        "p95Seconds": _round(readings.p95_seconds, 3) if decision.metrics_available else None,
        "autoscaling": {
            "queueDepthReplicas": decision.proposals[QUEUE],
            "p95Replicas": decision.proposals[LATENCY],
            "utilizationReplicas": decision.proposals[UTILIZATION],
            "capacityReplicas": decision.proposals[CAPACITY],
            "busyReplicas": _round(readings.busy_replicas, 2) if decision.metrics_available else None,
            "winner": decision.winner,
        },
        "conditions": conditions,
    }
    if changed:
        wanted["lastScaleTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {key: value for key, value in wanted.items() if _stored(status.get(key)) != _stored(value)}
    return patch or None


def nothing_to_report_yet(
    resource: Mapping[str, Any], decision: Decision, metrics: Metrics, *, replicas: int, ready: int,
    ready_for_seconds: float, grace_seconds: float,
) -> bool:
    """A first evaluation that holds while its readings cannot be there yet: no status write.

    Before a pod is ready there are no series; after the first one is, Prometheus has
    to discover and scrape it twice before the rate window can be read. Saying so ("no
    series", "rate window too short") would only replace the operator's
    MetricsAvailable=Unknown AwaitingMetrics, and cost a write per new resource plus
    one more when the readings come. The autoscaler's first write comes when the
    readings are there, when it scales, when reading failed otherwise (a missing or
    unreachable Prometheus is said at once), or when a pod has been ready for
    `grace_seconds` (one rate window) and its series still cannot be read: a scrape
    that never finds the pods is reported.
    """
    first = c.find((resource.get("status") or {}).get("conditions"), SCALING) is None
    if not first or replicas == 0 or decision.desired != replicas or decision.metrics_available:
        return False
    if metrics.failure is not None and metrics.failure[0] != RATE_WINDOW_TOO_SHORT:
        return False
    return ready == 0 or ready_for_seconds < grace_seconds


def _stored(value: Any) -> Any:
    """How the API server stores a field of the autoscaler's apply: null members removed, an empty object left out."""
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if item is not None}
        return value or None
    return value


def _controlled_by(child: Mapping[str, Any], uid: str) -> bool:
    references = child.get("metadata", {}).get("ownerReferences") or ()
    return any(reference.get("controller") and reference.get("uid") == uid for reference in references)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
