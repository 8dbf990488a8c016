"""The autoscaling policy: a pure function from observations and targets to a decision.

No I/O, no clock, no Kubernetes types: the loop, the simulator and the tests all
call `decide` with plain values and keep the returned `History` for the next call.

Rules, in order:

1. Signals. Queue depth (waiting requests summed over the pods with a fresh
   series), p95 latency, busy replicas (GPU-seconds spent in batches per second)
   and the served rate with the mean batch time and size. A missing, NaN, Inf or
   stale reading is *no signal*, never zero. An empty p95 with a queue reading
   means "no traffic".
2. Per-signal proposals. Queue: ceil(queue / targetQueueDepth). Utilization:
   ceil(busy / target_utilization). Latency: ceil(basis * p95 / targetP95Seconds)
   where basis is the fewest ready replicas over the latency window, so a lagging
   p95 does not compound a scale-up; when the target is at or below one
   request's time on an idle replica, latency proposes nothing (more replicas
   cannot reach it) and the decision says so. Capacity (`sizing.replicas_for`):
   the fewest replicas whose queue meets the p95 target at the arrival rate (the
   served rate plus the queue's growth beyond its target), raised to drain the
   backlog soon after new pods are ready. A proxy within the tolerance band of
   its target proposes the current count.
3. Capacity, when it has its inputs, decides alone: the queue, utilization and
   latency proxies are its fallback (before the first batch, or when latency is
   unreachable), and then the largest proposal wins. Nothing scales down
   without a fresh queue reading from every ready pod: as HPA does, a pod
   without one counts as at target on a scale-down, as idle on a scale-up.
   Without any signal the count holds.
4. Stabilization as HPA does it: scale up to the smallest recommendation of the
   scale-up window, scale down to the largest of the scale-down window.
5. Clamp to [minReplicas, maxReplicas], then to what free GPUs can host, never
   below minReplicas.
6. Zero. Only with a demand source (the gateway): at zero, demand newer than the
   scale-down window scales to at least 1 at once; above zero, recent demand
   keeps at least 1.
7. Demand at the front door. With the gateway's series, the arrival rate is the
   larger of the pods' estimate and the gateway's arrivals (every request, also
   those still queued or shed), and the requests queued at the gateway join the
   backlog. When demand (arrivals plus the backlog over the p95 target) is over
   twice what the ready replicas serve, capacity's count is taken at once,
   whatever the scale-up window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .sizing import replicas_for

QUEUE = "queueDepth"
LATENCY = "p95"
UTILIZATION = "utilization"
CAPACITY = "capacity"

# Decision reasons (CamelCase, used for the Scaling condition and Events).
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
STEADY = "Steady"
STABILIZING = "ScaleDownStabilizing"
METRICS_MISSING = "MetricsMissing"
METRICS_STALE = "MetricsStale"
PARTIAL_METRICS = "PartialMetrics"
# Scale to and from zero.
IDLE_WINDOW_ELAPSED = "IdleWindowElapsed"  # N -> 0: no traffic, no demand for the window
SCALED_TO_ZERO = "ScaledToZero"  # held at 0 until demand
SCALED_FROM_ZERO = "ScaledFromZero"  # 0 -> N on demand
# Limits that cut a recommendation (the ScalingLimited condition's reasons).
TOO_MANY = "TooManyReplicas"
TOO_FEW = "TooFewReplicas"
INSUFFICIENT_GPUS = "InsufficientGPUs"

# Demand over this many times the ready replicas' rate scales to it at once (Knative's panic mode).
PANIC_FACTOR = 2.0

# The latency and busy-time windows span at least this many evaluation intervals
# and this many scrape intervals (rate() needs two samples, four gives margin).
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
    # A demand source (the gateway) wakes the resource from zero: only then may it reach 0.
    scale_to_zero: bool = False
    # Seconds from asking for a replica to its serving (scheduling, pull, model load).
    startup_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= minReplicas <= maxReplicas, got {self.min_replicas}..{self.max_replicas}")
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ValueError("minReplicas 0 needs a demand source to wake the resource from zero")
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
    # Pods whose fresh queue-depth series make up queue_depth; None: every ready pod.
    queue_series: int | None = None
    # Requests per second served, and the mean pipeline call (seconds, requests) over the window.
    served_rate: float | None = None
    batch_seconds: float | None = None
    batch_size: float | None = None
    # Most replicas the free GPUs of the class can host now; None = no limit known.
    capacity: int | None = None
    # Seconds since the demand source last asked for this resource; None = never.
    demand_age_seconds: float | None = None
    # Why the readings are missing (e.g. "Prometheus unreachable: ..."), for messages.
    error: str | None = None
    # The gateway's demand, summed over its replicas: arrivals per second, requests queued there.
    # None: no gateway series for the resource.
    gateway_arrival_rate: float | None = None
    gateway_queued: float | None = None


@dataclass(frozen=True)
class Sample:
    time: float
    replicas: int


@dataclass(frozen=True)
class History:
    """What the policy remembers between calls: raw recommendations and ready counts."""

    recommendations: tuple[Sample, ...] = ()
    ready: tuple[Sample, ...] = ()
    # The last fresh queue reading (time, depth): its growth adds to the served rate.
    queue: tuple[float, float] | None = None


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
    # Ready pods without a fresh queue-depth series (they block any scale-down).
    missing_series: int = 0
    # Why latency proposed nothing although it was read: the target and the service time.
    latency_unreachable: str | None = None
    # Whether the gateway's demand series were read (False: sized from the pods' signals alone).
    gateway_demand: bool = False
    # Demand over PANIC_FACTOR x the ready rate: capacity's count taken at once.
    panic: bool = False


def valid(value: float | None) -> float | None:
    """A reading usable as a signal: not None, NaN, Inf or negative."""
    if value is None or math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def _ratio_proposal(wanted: float, current: int, tolerance: float) -> int:
    if current > 0 and abs(wanted / current - 1.0) <= tolerance:
        return current
    return math.ceil(wanted)


def _latency_proposal(p95: float, current: int, basis: int, targets: Targets) -> int:
    ratio = p95 / targets.target_p95_seconds
    if abs(ratio - 1.0) <= targets.tolerance:
        return current
    if ratio > 1.0:
        return max(current, math.ceil(basis * ratio))
    return math.ceil(current * ratio)


def idle_service_seconds(batch_seconds: float | None, batch_size: float | None) -> float | None:
    """A lower bound on one request's time on an idle replica: the mean pipeline call
    divided by its mean size (a batch never costs less per request than one alone)."""
    seconds, size = valid(batch_seconds), valid(batch_size)
    if seconds is None or size is None or size <= 0:
        return None
    return seconds / max(1.0, size)


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
    demand = _recent_demand(observation, targets)
    floor = max(targets.min_replicas, 1 if demand is not None else 0)

    if current == 0 and targets.min_replicas == 0:
        return _at_zero(observation, targets, recommendations, ready, demand)

    queue = valid(observation.queue_depth)
    p95 = valid(observation.p95_seconds)
    age = observation.metrics_age_seconds
    stale = age is not None and (valid(age) is None or age > targets.max_metric_age_seconds)
    if stale:
        queue = p95 = None
    busy = None if stale else valid(observation.busy_replicas)
    gateway_rate = None if stale else valid(observation.gateway_arrival_rate)
    gateway_queue = None if stale else valid(observation.gateway_queued)
    if queue is not None and gateway_queue is not None:
        queue += gateway_queue  # waiting at the front door is waiting all the same
    missing = 0
    if queue is not None and observation.queue_series is not None:
        missing = max(0, observation.ready_replicas - observation.queue_series)

    proposals: dict[str, int | None] = {QUEUE: None, LATENCY: None, UTILIZATION: None, CAPACITY: None}
    if queue is not None:
        wanted = queue / targets.target_queue_depth
        if missing and wanted < current:
            # On a scale-down, pods without a fresh series count as holding the target
            # (HPA's rule); on a scale-up, as idle.
            wanted += missing
        proposals[QUEUE] = _ratio_proposal(wanted, current, targets.tolerance)
    if busy is not None:
        proposals[UTILIZATION] = _ratio_proposal(busy / targets.target_utilization, current, targets.tolerance)
    service = None if stale else idle_service_seconds(observation.batch_seconds, observation.batch_size)
    unreachable = None
    if p95 is not None:
        if service is not None and targets.target_p95_seconds <= service:
            unreachable = (
                f"targetP95Seconds {targets.target_p95_seconds:g}s is at or below one request's time on an "
                f"idle replica ({service:.2f}s): more replicas cannot reach it, so latency does not scale"
            )
        else:
            window_ready = [s.replicas for s in ready if now - s.time <= targets.latency_window_seconds]
            basis = max(1, min(window_ready))
            proposals[LATENCY] = _latency_proposal(p95, current, basis, targets)
    rate = None if stale else valid(observation.served_rate)
    if rate is not None and queue is not None:
        # Served is what the fleet managed; a queue growing past the target is arrivals it
        # did not (below it, batching noise). A first look takes it as built within the window.
        normal = targets.target_queue_depth * observation.ready_replicas
        since, before = history.queue or (now - targets.latency_window_seconds, normal)
        if now > since:
            rate += max(0.0, (queue - max(before, normal)) / (now - since))
    if gateway_rate is not None:
        rate = max(rate or 0.0, gateway_rate)  # what arrived, not only what was served
    panic = False
    if rate is not None and queue is not None and service is not None and unreachable is None:
        sized = replicas_for(
            arrival_rate=rate,
            batch_seconds=valid(observation.batch_seconds) or 0.0,
            batch_size=valid(observation.batch_size) or 1.0,
            queue=queue,
            ready=observation.ready_replicas,
            starting=max(0, current - observation.ready_replicas),
            target_p95_seconds=targets.target_p95_seconds,
            startup_seconds=targets.startup_seconds,
        )
        if sized is not None:
            proposals[CAPACITY] = sized
            serves = observation.ready_replicas * max(1.0, valid(observation.batch_size) or 1.0) / (
                valid(observation.batch_seconds) or math.inf)
            demand_rate = rate + queue / targets.target_p95_seconds
            panic = gateway_rate is not None and demand_rate > PANIC_FACTOR * serves

    given = {name: value for name, value in proposals.items() if value is not None}
    if not given:
        held = _clamp(current, targets, floor)
        reason = METRICS_STALE if stale else METRICS_MISSING
        detail = (
            f"newest sample is {observation.metrics_age_seconds:.0f}s old"
            if stale and valid(observation.metrics_age_seconds) is not None
            else "the age of the newest sample is unknown"
            if stale
            else unreachable or observation.error or "no queue depth or latency series for this resource"
        )
        return Decision(
            desired=held,
            reason=reason,
            message=f"holding {held} replicas: {detail}",
            proposals=proposals,
            winner=None,
            metrics_available=False,
            limited=None,
            history=History(recommendations + (Sample(now, current),), ready, history.queue),
            latency_unreachable=unreachable,
        )

    if CAPACITY in given:
        given = {CAPACITY: given[CAPACITY]}  # the model sizes for the target; the proxies are its fallback
    winner = max(given, key=lambda name: given[name])
    raw = given[winner]
    if queue is None or missing > 0:
        raw = max(raw, current)  # without every pod's queue, the other signals may only add replicas
    up_floor = raw if panic else min(
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

    desired = _clamp(stabilized, targets, floor)
    limited: str | None = None
    if raw > targets.max_replicas:
        limited = TOO_MANY
    elif raw < targets.min_replicas:
        limited = TOO_FEW
    if observation.capacity is not None and desired > max(current, observation.capacity, floor):
        desired = max(current, observation.capacity, floor)
        limited = INSUFFICIENT_GPUS

    signals = _describe(queue, p95, busy, rate, proposals, targets, gateway_queue)
    if panic:
        signals += f"; demand is over {PANIC_FACTOR:g}x what the ready replicas serve: sized to it at once"
    if missing:
        signals += (
            f"; {missing} of {observation.ready_replicas} ready pods have no fresh queue depth "
            f"(counted at target, no scale-down)"
        )
    if unreachable:
        signals += f"; {unreachable}"
    if desired > current:
        reason, message = SCALED_UP, f"{current} -> {desired} replicas ({winner} wins): {signals}"
    elif desired < current and desired == 0:
        reason = IDLE_WINDOW_ELAPSED
        message = (
            f"{current} -> 0 replicas: no traffic and no demand for the "
            f"{targets.scale_down_stabilization_seconds:.0f}s scale-down window; a request through the "
            f"gateway wakes it"
        )
    elif desired < current:
        reason = SCALED_DOWN
        message = (
            f"{current} -> {desired} replicas (the largest recommendation of the last "
            f"{targets.scale_down_stabilization_seconds:.0f}s); now {signals}"
        )
    elif missing and raw == current and given[winner] < current:
        reason, message = PARTIAL_METRICS, f"holding {current} replicas: {signals}"
    elif raw < current and desired > floor:
        reason = STABILIZING
        message = (
            f"holding {current} replicas for the "
            f"{targets.scale_down_stabilization_seconds:.0f}s scale-down window: {signals}"
        )
    else:
        reason, message = STEADY, f"{current} replicas: {signals}"
    if demand is not None and raw < 1 <= desired == floor and targets.min_replicas == 0:
        message += f"; gateway demand {demand:.0f}s ago keeps 1 replica"
    if limited == INSUFFICIENT_GPUS:
        message += f"; no free GPUs for more than {max(current, observation.capacity or 0)} replicas"
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
        history=History(recommendations, ready, None if queue is None else (now, queue)),
        missing_series=missing,
        latency_unreachable=unreachable,
        gateway_demand=gateway_rate is not None,
        panic=panic,
    )


def _recent_demand(observation: Observation, targets: Targets) -> float | None:
    """Seconds since the demand source asked, when that is within the scale-down window."""
    if not targets.scale_to_zero or observation.demand_age_seconds is None:
        return None
    age = observation.demand_age_seconds
    if math.isnan(age):
        return None
    age = max(0.0, age)  # a clock ahead of ours: demand is now
    return age if age < targets.scale_down_stabilization_seconds else None


def _at_zero(
    observation: Observation,
    targets: Targets,
    recommendations: tuple[Sample, ...],
    ready: tuple[Sample, ...],
    demand: float | None,
) -> Decision:
    """At zero there are no pods and so no series: only demand wakes the resource."""
    now = observation.time
    empty: dict[str, int | None] = {QUEUE: None, LATENCY: None, UTILIZATION: None, CAPACITY: None}
    if demand is None:
        return Decision(
            desired=0,
            reason=SCALED_TO_ZERO,
            message="0 replicas: idle, no demand within the "
            f"{targets.scale_down_stabilization_seconds:.0f}s scale-down window; a request through the "
            "gateway wakes it",
            proposals=empty,
            winner=None,
            metrics_available=False,
            limited=None,
            history=History(recommendations + (Sample(now, 0),), ready),
        )
    desired = max(1, targets.min_replicas)
    limited = INSUFFICIENT_GPUS if observation.capacity is not None and observation.capacity < desired else None
    message = f"0 -> {desired} replicas: the gateway asked for this resource {demand:.1f}s ago"
    if limited:
        message += f"; no free GPUs for {desired} replicas (the pod waits for one)"
    return Decision(
        desired=desired,
        reason=SCALED_FROM_ZERO,
        message=message,
        proposals=empty,
        winner=None,
        metrics_available=False,
        limited=limited,
        history=History(recommendations + (Sample(now, desired),), ready),
    )


def _clamp(replicas: int, targets: Targets, floor: int) -> int:
    return min(max(replicas, floor), targets.max_replicas)


def _describe(
    queue: float | None,
    p95: float | None,
    busy: float | None,
    rate: float | None,
    proposals: dict[str, int | None],
    targets: Targets,
    gateway_queue: float | None = None,
) -> str:
    parts = []
    if queue is not None:
        at_gateway = "" if gateway_queue is None else f", {gateway_queue:g} of them at the gateway"
        parts.append(f"queue {queue:g}{at_gateway} (target {targets.target_queue_depth:g}/replica) "
                     f"asks {proposals[QUEUE]}")
    else:
        parts.append("no queue signal")
    if p95 is not None:
        asks = proposals[LATENCY]
        parts.append(
            f"p95 {p95:.2f}s (target {targets.target_p95_seconds:g}s) "
            + ("asks nothing" if asks is None else f"asks {asks}")
        )
    else:
        parts.append("no p95 signal (no traffic)")
    if busy is not None:
        parts.append(
            f"{busy:.2f} replicas busy (target {targets.target_utilization:.0%}) asks {proposals[UTILIZATION]}"
        )
    if rate is not None and proposals[CAPACITY] is not None:
        arriving = " arriving" if gateway_queue is not None else ""
        parts.append(f"{rate:.2f} requests/s{arriving} need {proposals[CAPACITY]} for the p95 target")
    return ", ".join(parts)
