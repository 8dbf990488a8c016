"""Observe -> decide -> act for one autoscaled ImageModelDeployment.

Observe: the Deployment's replicas, Prometheus's readings, the free GPUs of the
class. Decide: `policy.decide`. Act, writing only what changed and in this order:
the status (desiredReplicas first, so a reconcile never applies a stale count),
the Deployment's spec.replicas, then an Event when the count changed. The
user's spec is never written.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import conditions as c
from ..catalog import GPUClass
from ..crd.models import ImageModelDeploymentSpec
from ..kube import Conflict, Kube
from ..tiers import Autoscaling, effective_autoscaling
from . import queries
from .capacity import replica_capacity
from .policy import (
    LATENCY,
    METRICS_STALE,
    QUEUE,
    UTILIZATION,
    WINDOW_INTERVALS,
    Decision,
    History,
    Observation,
    Targets,
    decide,
)
from .prometheus import PrometheusClient, PrometheusError, PrometheusUnavailable

SCALING = "Scaling"
SCALING_LIMITED = "ScalingLimited"
# MetricsAvailable reasons.
METRICS_FOUND = "MetricsFound"
NO_METRICS = "NoMetrics"
PROMETHEUS_NOT_CONFIGURED = "PrometheusNotConfigured"
PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
QUERY_FAILED = "QueryFailed"
# ScalingLimited reason when no limit cut the recommendation.
WITHIN_LIMITS = "WithinLimits"

FIELD_MANAGER = "imagefleet-autoscaler"
CLOSE_TIMEOUT_SECONDS = 10.0
STATUS_ATTEMPTS = 3

logger = logging.getLogger(__name__)


def targets_of(settings: Autoscaling, interval_seconds: float) -> Targets:
    """The policy's targets from the effective (tier-filled) autoscaling settings."""
    return Targets(
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        target_queue_depth=settings.target_queue_depth,
        target_p95_seconds=settings.target_p95_seconds,
        scale_up_stabilization_seconds=settings.scale_up_stabilization_seconds,
        scale_down_stabilization_seconds=settings.scale_down_stabilization_seconds,
        latency_window_seconds=WINDOW_INTERVALS * interval_seconds,
    )


@dataclass(frozen=True)
class Metrics:
    readings: queries.Readings
    # (reason, message) when the readings could not be taken.
    failure: tuple[str, str] | None = None


class Autoscaler:
    """Evaluates resources one at a time; remembers each one's policy history by uid."""

    def __init__(
        self,
        kube: Kube,
        prometheus: PrometheusClient | None,
        gpu_classes: Mapping[str, GPUClass],
        *,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.interval_seconds = interval_seconds
        self.prometheus = prometheus
        self.gpu_classes = gpu_classes
        self.clock = clock
        self.instance = socket.gethostname()
        self._histories: dict[str, History] = {}
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def aclose(self) -> None:
        """Let evaluations in flight finish (up to 10 s), then close the clients.

        Later evaluations do nothing: kopf may run a daemon past the cleanup.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("closing the autoscaler with %d evaluations still running", self._in_flight)
        if self.prometheus is not None:
            await self.prometheus.aclose()
        self.kube.close()

    def forget(self, uid: str) -> None:
        self._histories.pop(uid, None)

    async def evaluate(self, resource: Mapping[str, Any]) -> Decision | None:
        """One evaluation; None when there is nothing to scale (off, closed, or no Deployment of ours yet)."""
        if self._closed:
            return None
        self._in_flight += 1
        self._idle.clear()
        try:
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
        deployment = await self.kube.get("Deployment", namespace, name)
        if deployment is None or not _controlled_by(deployment, uid):
            return None
        targets = targets_of(settings, self.interval_seconds)
        replicas = int(deployment.get("spec", {}).get("replicas", 1))
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        metrics = await self._metrics(namespace, name, targets.latency_window_seconds)
        gpu_class = self.gpu_classes.get(spec.gpu_class)
        capacity = None if gpu_class is None else await replica_capacity(self.kube, gpu_class, namespace, name)
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
                capacity=capacity,
                error=None if metrics.failure is None else metrics.failure[1],
            ),
            targets,
            self._histories.get(uid, History()),
        )
        self._histories[uid] = decision.history
        await self._write_status(resource, decision, metrics, changed=decision.desired != replicas)
        if decision.desired != replicas:
            await self.kube.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                body={"spec": {"replicas": decision.desired}},
                content_type="application/merge-patch+json",
                query={"fieldManager": FIELD_MANAGER},
            )
            await self.kube.post_event(resource, "Normal", decision.reason, decision.message, self.instance)
            logger.info("%s/%s: %s", namespace, name, decision.message)
        return decision

    async def _metrics(self, namespace: str, name: str, window_seconds: float) -> Metrics:
        empty = queries.Readings(None, None, None, None)
        if self.prometheus is None:
            return Metrics(empty, (PROMETHEUS_NOT_CONFIGURED, "IMAGEFLEET_PROMETHEUS_URL is not set"))
        try:
            return Metrics(await queries.read(self.prometheus, namespace, name, window_seconds))
        except PrometheusUnavailable as error:
            return Metrics(empty, (PROMETHEUS_UNREACHABLE, str(error)))
        except PrometheusError as error:
            return Metrics(empty, (QUERY_FAILED, str(error)))

    async def _write_status(
        self, resource: Mapping[str, Any], decision: Decision, metrics: Metrics, *, changed: bool
    ) -> None:
        """Merge-patch the autoscaler's status fields; re-read and retry on a conflict."""
        metadata = resource["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        current = resource
        for attempt in range(1, STATUS_ATTEMPTS + 1):
            status = current.get("status") or {}
            patch = status_patch(status, decision, metrics, generation=current["metadata"].get("generation"),
                                 changed=changed)
            if patch is None:
                return
            try:
                await self.kube.patch_status(namespace, name, patch, current["metadata"].get("resourceVersion"))
                return
            except Conflict:
                if attempt == STATUS_ATTEMPTS:
                    raise
                fresh = await self.kube.get("ImageModelDeployment", namespace, name)
                if fresh is None:
                    return
                current = fresh


def status_patch(
    status: Mapping[str, Any], decision: Decision, metrics: Metrics, *, generation: int | None, changed: bool
) -> dict[str, Any] | None:
    """The autoscaler's status fields as they should be, as a merge patch; None when nothing differs."""
    readings = metrics.readings
    if decision.metrics_available:
        available = (c.TRUE, METRICS_FOUND, "queue depth and latency read from Prometheus")
    elif metrics.failure is not None:
        available = (c.FALSE, metrics.failure[0], decision.message)  # the message carries the failure
    else:
        available = (c.FALSE, METRICS_STALE if decision.reason == METRICS_STALE else NO_METRICS, decision.message)
    if decision.limited is None:
        limited = (c.FALSE, WITHIN_LIMITS, "the recommendation is within minReplicas, maxReplicas and free GPUs")
    else:
        limited = (c.TRUE, decision.limited, decision.message)
    scaling = (c.TRUE if changed else c.FALSE, decision.reason, decision.message)
    conditions = status.get("conditions") or []
    for type_, (state, reason, message) in (
        (c.METRICS_AVAILABLE, available),
        (SCALING, scaling),
        (SCALING_LIMITED, limited),
    ):
        conditions = c.set_condition(conditions, type_, state, reason, message, generation=generation)
    wanted: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "queueDepth": readings.queue_depth if decision.metrics_available else None,
        "p95Seconds": _round(readings.p95_seconds, 3) if decision.metrics_available else None,
        "autoscaling": {
            "queueDepthReplicas": decision.proposals[QUEUE],
            "p95Replicas": decision.proposals[LATENCY],
            "utilizationReplicas": decision.proposals[UTILIZATION],
            "busyReplicas": _round(readings.busy_replicas, 2) if decision.metrics_available else None,
            "winner": decision.winner,
        },
        "conditions": conditions,
    }
    if changed:
        wanted["lastScaleTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {key: value for key, value in wanted.items() if status.get(key) != _without_nulls(value)}
    return patch or None


def _without_nulls(value: Any) -> Any:
    """How the API server stores a merge-patched object: null members removed."""
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if item is not None}
    return value


def _controlled_by(child: Mapping[str, Any], uid: str) -> bool:
    references = child.get("metadata", {}).get("ownerReferences") or ()
    return any(reference.get("controller") and reference.get("uid") == uid for reference in references)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
