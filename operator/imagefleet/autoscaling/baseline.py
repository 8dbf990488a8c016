"""Kubernetes' HorizontalPodAutoscaler (autoscaling/v2, default behavior), for `imagefleet simulate`.

The metrics are the ones a user would configure for this fleet, through KEDA's
Prometheus scaler or a custom-metrics adapter, on the same readings imagefleet gets:

| metric | HPA type | replicas it asks for (outside the 0.1 tolerance) |
| --- | --- | --- |
| queue depth (sum) | External, AverageValue targetQueueDepth | ceil(queue / target) |
| p95 latency | External, Value targetP95Seconds | ceil(p95 / target * ready pods) |
| busy share per pod | Pods, AverageValue target_utilization | ceil(mean busy / target * pods with metrics) |
| the gateway's queued requests | External, AverageValue targetQueueDepth | ceil(queued / target) |

as the replica calculator (pkg/controller/podautoscaler/replica_calculator.go)
computes them: a Value metric scales the *ready* pods; for the Pods metric, pods still starting (Pending) are unready:
left out, and on a scale-up counted as idle, and a recount that flips the
direction keeps the current count. Empty or NaN Prometheus results read as 0,
as KEDA's `ignoreNullValues` default does; an invalid metric blocks a scale-down.

`KEDA_SCALED_OBJECT` is the metric set of the ScaledObject docs/keda.md recommends, with the
gateway's queue as a third trigger: every trigger is an External AverageValue metric, so the
busy replicas ask for ceil(busy / 0.8) whatever the pods' readiness, and there is no p95 trigger.

Then normalizeDesiredReplicasWithBehaviors: the recommendation history is seeded
with the current count, stabilized (scale-up to the smallest recommendation of
the scale-up window, scale-down to the largest of the scale-down window: the
same windows imagefleet gets), limited to max(+100 %, +4 pods) per 15 s period
counted from the scale events of the last 15 s, whatever the evaluation
interval, and clamped to [minReplicas, maxReplicas]. The default scale-down
policy (100 % per 15 s) never limits.

When it reads is the simulator's (simulation.py), each mechanism as it runs live: one sync per
evaluation interval, at an offset of its own (kube-controller-manager re-queues an HPA one sync
period after each sync ends, so a live sync period is the period plus the sync's own duration,
which benchmarks/sim_vs_live.py measures and passes as the interval); rate() as Prometheus
computes it; samples up to a scrape old; and for KEDA, queries evaluated at the last whole
second (`Fleet.query_step_seconds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .policy import Observation, Targets

TOLERANCE = 0.1
UP_PERIOD_SECONDS = 15.0
UP_PERCENT = 100
UP_PODS = 4


@dataclass(frozen=True)
class HpaMetrics:
    """Which metrics the HPA is given, beside the queue depth (and the gateway's queue, when scraped)."""

    p95: bool  # the p95 latency, External Value
    busy_per_pod: bool  # the busy share: Pods AverageValue per pod (True) or External AverageValue of the sum


# `imagefleet simulate`'s HPA: every signal imagefleet reads, as a custom-metrics adapter would give them.
ALL_SIGNALS = HpaMetrics(p95=True, busy_per_pod=True)
# The ScaledObject of docs/keda.md (queue depth and busy replicas) plus the gateway's queue.
KEDA_SCALED_OBJECT = HpaMetrics(p95=False, busy_per_pod=False)


@dataclass(frozen=True)
class _Event:
    time: float
    change: int


class HpaAutoscaler:
    """One HorizontalPodAutoscaler; `desired(observation)` is one sync of its controller."""

    def __init__(self, targets: Targets, metrics: HpaMetrics = ALL_SIGNALS) -> None:
        self.targets = targets
        self.metrics = metrics
        self._recommendations: list[tuple[float, int]] = []
        self._up_events: list[_Event] = []
        self._down_events: list[_Event] = []

    def desired(self, observation: Observation) -> int:
        now, current = observation.time, observation.replicas
        if not self._recommendations:
            self._recommendations.append((now, current))
        proposals = self.metric_proposals(observation)
        valid = [p for p in proposals if p is not None]
        if not valid or (len(valid) < len(proposals) and max(valid) < current):
            return current  # an invalid metric blocks a scale-down; none at all: no change
        desired = self._stabilize(now, current, max(valid))
        desired = self._rate_limit(now, current, desired)
        desired = min(max(desired, self.targets.min_replicas), self.targets.max_replicas)
        if desired > current:
            self._up_events.append(_Event(now, desired - current))
        elif desired < current:
            self._down_events.append(_Event(now, current - desired))
        return desired

    def metric_proposals(self, observation: Observation) -> list[int | None]:
        """What each metric asks for; None for an invalid metric."""
        current, ready = observation.replicas, observation.ready_replicas
        queue = _zero_if_missing(observation.queue_depth)
        p95 = _zero_if_missing(observation.p95_seconds)
        proposals: list[int | None] = [external_average_value(queue, self.targets.target_queue_depth, current)]
        if self.metrics.p95:
            proposals.append(external_value(p95, self.targets.target_p95_seconds, current, ready))
        if observation.gateway_queued is not None:  # a gateway is scraped: its queue, as an external metric
            proposals.append(external_average_value(_zero_if_missing(observation.gateway_queued),
                                                    self.targets.target_queue_depth, current))
        if not self.metrics.busy_per_pod:  # KEDA's trigger: the sum, empty read as 0
            busy = _zero_if_missing(observation.busy_replicas)
            proposals.append(external_average_value(busy, self.targets.target_utilization, current))
        elif observation.busy_replicas is not None and not math.isnan(observation.busy_replicas):
            per_pod = [observation.busy_replicas / ready] * ready if ready else []
            proposals.append(
                pods_average_value(per_pod, current - ready, self.targets.target_utilization, current)
            )
        return proposals

    def _stabilize(self, now: float, current: int, raw: int) -> int:
        up_cutoff = now - self.targets.scale_up_stabilization_seconds
        down_cutoff = now - self.targets.scale_down_stabilization_seconds
        up, down = raw, raw
        old = None
        for index, (time, recommendation) in enumerate(self._recommendations):
            if time > up_cutoff:
                up = min(up, recommendation)
            if time > down_cutoff:
                down = max(down, recommendation)
            if time < up_cutoff and time < down_cutoff:
                old = index
        stabilized = min(max(current, up), down)
        if old is None:
            self._recommendations.append((now, raw))
        else:
            self._recommendations[old] = (now, raw)
        return stabilized

    def _rate_limit(self, now: float, current: int, desired: int) -> int:
        if desired <= current:
            return desired
        added = sum(e.change for e in self._up_events if e.time > now - UP_PERIOD_SECONDS)
        deleted = sum(e.change for e in self._down_events if e.time > now - UP_PERIOD_SECONDS)
        start = current - added + deleted
        limit = max(start + UP_PODS, math.ceil(start * (1 + UP_PERCENT / 100)))
        return min(desired, max(limit, current))


def external_average_value(total: float, target: float, current: int) -> int:
    """An External metric with an AverageValue target (GetExternalPerPodMetricReplicas)."""
    if current > 0 and abs(total / (target * current) - 1.0) <= TOLERANCE:
        return current
    return math.ceil(total / target)


def external_value(value: float, target: float, current: int, ready: int) -> int:
    """An External metric with a Value target (GetExternalMetricReplicas): scales the ready
    pods, so with none ready yet it asks for 0."""
    ratio = value / target
    if abs(ratio - 1.0) <= TOLERANCE:
        return current
    return math.ceil(ratio * ready)


def pods_average_value(per_pod: list[float], unready: int, target: float, current: int) -> int | None:
    """A Pods metric with an AverageValue target (calcPlainMetricReplicas), all pods reporting
    except `unready` ones still starting."""
    if not per_pod:
        return None  # "did not receive metrics for targeted pods (pods might be unready)"
    ratio = sum(per_pod) / len(per_pod) / target
    if not (unready > 0 and ratio > 1.0):
        if abs(ratio - 1.0) <= TOLERANCE:
            return current
        return math.ceil(ratio * len(per_pod))
    recount = sum(per_pod) / (len(per_pod) + unready) / target  # unready pods at 0 on a scale-up
    if abs(recount - 1.0) <= TOLERANCE or recount < 1.0:
        return current
    replicas = math.ceil(recount * (len(per_pod) + unready))
    return current if replicas < current else replicas


def _zero_if_missing(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value
