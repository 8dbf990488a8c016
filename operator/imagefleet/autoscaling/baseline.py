"""An HPA-default-like autoscaler on the same two signals, for `imagefleet simulate`.

What it mimics (autoscaling/v2 defaults, sync period 15 s): per metric
ceil(current * value / target) with a 0.1 tolerance (queue depth as an
AverageValue metric: ceil(total / target)), the larger wins, scale-up at most
max(100 %, 4 pods) per period, scale-down to the largest recommendation of the
last 300 s. Like KEDA's Prometheus scaler (keda#3065), a NaN or empty reading
counts as 0. With `with_utilization` it also gets imagefleet's busy-replicas
signal as a Utilization metric, to separate the signal from the algorithm.
"""

from __future__ import annotations

import math
from collections import deque

from .policy import Observation, Targets

HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW_SECONDS = 300.0
HPA_UP_PODS = 4


class HpaLikeAutoscaler:
    def __init__(self, targets: Targets, *, with_utilization: bool = False) -> None:
        self.targets = targets
        self.with_utilization = with_utilization
        self._recommendations: deque[tuple[float, int]] = deque()

    def desired(self, observation: Observation) -> int:
        current = observation.replicas
        queue = _zero_if_missing(observation.queue_depth)
        p95 = _zero_if_missing(observation.p95_seconds)
        proposals = [
            _proposal(queue / self.targets.target_queue_depth, current),
            _proposal(current * p95 / self.targets.target_p95_seconds, current),
        ]
        if self.with_utilization:
            busy = _zero_if_missing(observation.busy_replicas)
            proposals.append(_proposal(busy / self.targets.target_utilization, current))
        raw = max(proposals)
        now = observation.time
        self._recommendations.append((now, raw))
        while now - self._recommendations[0][0] >= HPA_DOWN_WINDOW_SECONDS:
            self._recommendations.popleft()
        desired = raw
        if raw < current:
            desired = min(current, max(r for _, r in self._recommendations))
        desired = min(desired, max(2 * current, current + HPA_UP_PODS))
        return min(max(desired, self.targets.min_replicas), self.targets.max_replicas)


def _zero_if_missing(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def _proposal(wanted: float, current: int) -> int:
    if current > 0 and abs(wanted / current - 1.0) <= HPA_TOLERANCE:
        return current
    return math.ceil(wanted)
