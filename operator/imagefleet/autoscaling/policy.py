"""The autoscaling policy: a pure function from observations and targets to a decision.

No I/O, no clock, no Kubernetes types: the loop, the simulator and the tests all
call `decide` with plain values and keep the returned `History` for the next call.

Rules, in order:

1. Signals. Queue depth (waiting requests summed over the pods), p95 latency,
   and busy replicas (GPU-seconds spent in batches per second, from the batch
   duration histogram). A missing, NaN or stale reading is *no signal*, never
   zero. An empty p95 with a queue reading means "no traffic".
2. Per-signal proposals. Queue: ceil(queue / targetQueueDepth). Utilization:
   ceil(busy / target_utilization): the floor that keeps latency-driven
   scale-down from shrinking a busy fleet into a saw-tooth. Latency:
   ceil(basis * p95 / targetP95Seconds) where basis is the fewest ready replicas
   over the latency window (the fleet that produced that p95), so a p95 that has
   not yet caught up with a scale-up does not compound it. A signal within the
   tolerance band of its target proposes the current count.
3. The largest proposal wins. Without a fresh queue reading nothing scales down.
   Without any signal the count holds.
4. Stabilization as HPA does it: scale up to the smallest recommendation of the
   scale-up window (default 0 s: at once), scale down to the largest of the
   scale-down window (default 300 s), so a brief dip never shrinks the fleet.
5. Clamp to [minReplicas, maxReplicas], then to what free GPUs can host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

QUEUE = "queueDepth"
LATENCY = "p95"
UTILIZATION = "utilization"

# Decision reasons (CamelCase, used for the Scaling condition and Events).
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
STEADY = "Steady"
STABILIZING = "ScaleDownStabilizing"
METRICS_MISSING = "MetricsMissing"
METRICS_STALE = "MetricsStale"
# Limits that cut a recommendation (the ScalingLimited condition's reasons).
TOO_MANY = "TooManyReplicas"
TOO_FEW = "TooFewReplicas"
INSUFFICIENT_GPUS = "InsufficientGPUs"

# The latency and busy-time windows span this many evaluation intervals (60 s at 15 s).
WINDOW_INTERVALS = 4


@dataclass(frozen=True)
class Targets:
    """What the resource asks for (after tier presets) and the policy's tuning."""

    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    target_p95_seconds: float
    tolerance: float = 0.1
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    latency_window_seconds: float = 60.0
    target_utilization: float = 0.8
    max_metric_age_seconds: float = 90.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= minReplicas <= maxReplicas, got {self.min_replicas}..{self.max_replicas}")
        if self.target_queue_depth <= 0 or self.target_p95_seconds <= 0:
            raise ValueError("targetQueueDepth and targetP95Seconds must be > 0")


@dataclass(frozen=True)
class Observation:
    """One look at the resource. `time` is seconds on any monotonic-enough clock."""

    time: float
    replicas: int
    ready_replicas: int
    queue_depth: float | None
    p95_seconds: float | None
    # Replicas busy running a batch, on average over the latency window.
    busy_replicas: float | None = None
    # Age of the newest sample behind the readings; None when unknown.
    metrics_age_seconds: float | None = None
    # Most replicas the free GPUs of the class can host now; None = no limit known.
    capacity: int | None = None
    # Why the readings are missing (e.g. "Prometheus unreachable: ..."), for messages.
    error: str | None = None


@dataclass(frozen=True)
class Sample:
    time: float
    replicas: int


@dataclass(frozen=True)
class History:
    """What the policy remembers between calls: raw recommendations and ready counts."""

    recommendations: tuple[Sample, ...] = ()
    ready: tuple[Sample, ...] = ()


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    message: str
    # Per signal: the replicas it asked for, None when it gave no signal.
    proposals: dict[str, int | None]
    winner: str | None
    metrics_available: bool
    # The ScalingLimited reason when a limit cut the recommendation, else None.
    limited: str | None
    history: History = field(repr=False)


def _valid(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def _queue_proposal(queue: float, current: int, targets: Targets) -> int:
    wanted = queue / targets.target_queue_depth
    if current > 0 and abs(wanted / current - 1.0) <= targets.tolerance:
        return current
    return math.ceil(wanted)


def _utilization_proposal(busy: float, current: int, targets: Targets) -> int:
    wanted = busy / targets.target_utilization
    if current > 0 and abs(wanted / current - 1.0) <= targets.tolerance:
        return current
    return math.ceil(wanted)


def _latency_proposal(p95: float, current: int, basis: int, targets: Targets) -> int:
    ratio = p95 / targets.target_p95_seconds
    if abs(ratio - 1.0) <= targets.tolerance:
        return current
    if ratio > 1.0:
        return max(current, math.ceil(basis * ratio))
    return math.ceil(current * ratio)


def decide(observation: Observation, targets: Targets, history: History) -> Decision:
    """Desired replicas for one resource, with the reason and what each signal asked for."""
    now = observation.time
    current = observation.replicas
    horizon = max(
        targets.scale_up_stabilization_seconds,
        targets.scale_down_stabilization_seconds,
        targets.latency_window_seconds,
    )
    # A fresh autoscaler counts the current size as its last recommendation,
    # so a restart never lets the fleet shrink before a full window.
    recommendations = history.recommendations or (Sample(now, current),)
    recommendations = tuple(s for s in recommendations if now - s.time < horizon)
    ready = tuple(s for s in history.ready if now - s.time <= horizon)
    ready += (Sample(now, observation.ready_replicas),)

    queue = _valid(observation.queue_depth)
    p95 = _valid(observation.p95_seconds)
    stale = (
        observation.metrics_age_seconds is not None
        and observation.metrics_age_seconds > targets.max_metric_age_seconds
    )
    if stale:
        queue = p95 = None

    busy = None if stale else _valid(observation.busy_replicas)
    proposals: dict[str, int | None] = {QUEUE: None, LATENCY: None, UTILIZATION: None}
    if queue is not None:
        proposals[QUEUE] = _queue_proposal(queue, current, targets)
    if busy is not None:
        proposals[UTILIZATION] = _utilization_proposal(busy, current, targets)
    if p95 is not None:
        window_ready = [s.replicas for s in ready if now - s.time <= targets.latency_window_seconds]
        basis = max(1, min(window_ready))
        proposals[LATENCY] = _latency_proposal(p95, current, basis, targets)

    given = {name: value for name, value in proposals.items() if value is not None}
    if not given:
        held = _clamp(current, targets)
        reason = METRICS_STALE if stale else METRICS_MISSING
        detail = (
            f"newest sample is {observation.metrics_age_seconds:.0f}s old"
            if stale
            else observation.error or "no queue depth or latency series for this resource"
        )
        return Decision(
            desired=held,
            reason=reason,
            message=f"holding {held} replicas: {detail}",
            proposals=proposals,
            winner=None,
            metrics_available=False,
            limited=None,
            history=History(recommendations + (Sample(now, current),), ready),
        )

    winner = max(given, key=lambda name: given[name])
    raw = given[winner]
    if queue is None:
        raw = max(raw, current)  # without the queue, latency may only add replicas
    up_floor = min(
        [raw]
        + [s.replicas for s in recommendations if now - s.time < targets.scale_up_stabilization_seconds]
    )
    down_ceiling = max(
        [raw]
        + [s.replicas for s in recommendations if now - s.time < targets.scale_down_stabilization_seconds]
    )
    recommendations += (Sample(now, raw),)
    stabilized = current
    if up_floor > current:
        stabilized = up_floor
    elif down_ceiling < current:
        stabilized = down_ceiling

    desired = _clamp(stabilized, targets)
    limited: str | None = None
    if raw > targets.max_replicas:
        limited = TOO_MANY
    elif raw < targets.min_replicas:
        limited = TOO_FEW
    if observation.capacity is not None and desired > max(current, observation.capacity):
        desired = max(current, observation.capacity)
        limited = INSUFFICIENT_GPUS

    signals = _describe(queue, p95, busy, proposals, targets)
    if desired > current:
        reason, message = SCALED_UP, f"{current} -> {desired} replicas ({winner} wins): {signals}"
    elif desired < current:
        reason = SCALED_DOWN
        message = (
            f"{current} -> {desired} replicas (the largest recommendation of the last "
            f"{targets.scale_down_stabilization_seconds:.0f}s); now {signals}"
        )
    elif raw < current and desired > targets.min_replicas:
        reason = STABILIZING
        message = (
            f"holding {current} replicas for the "
            f"{targets.scale_down_stabilization_seconds:.0f}s scale-down window: {signals}"
        )
    else:
        reason, message = STEADY, f"{current} replicas: {signals}"
    if limited == INSUFFICIENT_GPUS:
        message += f"; no free GPUs for more than {desired} replicas"
    elif limited is not None:
        message += f"; recommendation {raw} clamped to [{targets.min_replicas}, {targets.max_replicas}]"
    return Decision(
        desired=desired,
        reason=reason,
        message=message,
        proposals=proposals,
        winner=winner,
        metrics_available=True,
        limited=limited,
        history=History(recommendations, ready),
    )


def _clamp(replicas: int, targets: Targets) -> int:
    return min(max(replicas, targets.min_replicas), targets.max_replicas)


def _describe(
    queue: float | None,
    p95: float | None,
    busy: float | None,
    proposals: dict[str, int | None],
    targets: Targets,
) -> str:
    parts = []
    if queue is not None:
        parts.append(f"queue {queue:g} (target {targets.target_queue_depth:g}/replica) asks {proposals[QUEUE]}")
    else:
        parts.append("no queue signal")
    if p95 is not None:
        parts.append(f"p95 {p95:.2f}s (target {targets.target_p95_seconds:g}s) asks {proposals[LATENCY]}")
    else:
        parts.append("no p95 signal (no traffic)")
    if busy is not None:
        parts.append(
            f"{busy:.2f} replicas busy (target {targets.target_utilization:.0%}) asks {proposals[UTILIZATION]}"
        )
    return ", ".join(parts)
