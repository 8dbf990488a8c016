"""Tier presets: the batching and autoscaling settings a tier implies.

A preset fills only what the user left out of `spec.batching` and
`spec.autoscaling`; what the user set always wins. The result goes into the
Deployment (the runtime's environment) and the autoscaler, never into the spec.

| tier     | batch | queue | replicas | queue/replica | p95   | up / down window |
| -------- | ----- | ----- | -------- | ------------- | ----- | ---------------- |
| bulk     | 8     | 256   | 1..8     | 16            | 120 s | 60 s / 600 s     |
| standard | 4     | 64    | 1..4     | 4             | 30 s  | 0 s / 300 s      |
| premium  | 1     | 8     | 1..4     | 1             | 10 s  | 0 s / 600 s      |

Bulk trades latency for throughput (large batches, a deep queue, slow to
react); premium runs every request alone, scales up at once and is slow to
scale down, and never goes below one replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from .crd.models import AutoscalingSpec, BatchingSpec, ImageModelDeploymentSpec, Tier


@dataclass(frozen=True)
class Batching:
    max_batch_size: int
    queue_size: int


@dataclass(frozen=True)
class Autoscaling:
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    target_p95_seconds: float
    scale_up_stabilization_seconds: int
    scale_down_stabilization_seconds: int


@dataclass(frozen=True)
class Preset:
    batching: Batching
    autoscaling: Autoscaling


PRESETS: dict[Tier, Preset] = {
    "bulk": Preset(
        Batching(max_batch_size=8, queue_size=256),
        Autoscaling(False, 1, 8, target_queue_depth=16, target_p95_seconds=120,
                    scale_up_stabilization_seconds=60, scale_down_stabilization_seconds=600),
    ),
    "standard": Preset(
        Batching(max_batch_size=4, queue_size=64),
        Autoscaling(False, 1, 4, target_queue_depth=4, target_p95_seconds=30,
                    scale_up_stabilization_seconds=0, scale_down_stabilization_seconds=300),
    ),
    "premium": Preset(
        Batching(max_batch_size=1, queue_size=8),
        Autoscaling(False, 1, 4, target_queue_depth=1, target_p95_seconds=10,
                    scale_up_stabilization_seconds=0, scale_down_stabilization_seconds=600),
    ),
}


T = TypeVar("T")


def _pick(value: T | None, preset: T) -> T:
    return preset if value is None else value


def effective_batching(spec: ImageModelDeploymentSpec) -> Batching:
    """Batching with omitted fields from the tier; the queue holds at least one full batch."""
    given = spec.batching or BatchingSpec()
    preset = PRESETS[spec.tier].batching
    max_batch_size = _pick(given.max_batch_size, preset.max_batch_size)
    queue_size = _pick(given.queue_size, max(preset.queue_size, max_batch_size))
    return Batching(max_batch_size=max_batch_size, queue_size=queue_size)


def effective_autoscaling(spec: ImageModelDeploymentSpec) -> Autoscaling:
    """Autoscaling with omitted fields from the tier.

    A preset bound never contradicts a bound the user set: a user minReplicas
    above the preset maximum raises the maximum, and the other way round.
    """
    given: AutoscalingSpec = spec.autoscaling
    preset = PRESETS[spec.tier].autoscaling
    min_replicas = given.min_replicas
    max_replicas = given.max_replicas
    if min_replicas is None:
        min_replicas = preset.min_replicas if max_replicas is None else min(preset.min_replicas, max_replicas)
    if max_replicas is None:
        max_replicas = max(preset.max_replicas, min_replicas, 1)
    up = _pick(given.scale_up_stabilization_seconds, preset.scale_up_stabilization_seconds)
    down = _pick(given.scale_down_stabilization_seconds, max(preset.scale_down_stabilization_seconds, up))
    return Autoscaling(
        enabled=given.enabled,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_queue_depth=_pick(given.target_queue_depth, preset.target_queue_depth),
        target_p95_seconds=_pick(given.target_p95_seconds, preset.target_p95_seconds),
        scale_up_stabilization_seconds=min(up, down),
        scale_down_stabilization_seconds=down,
    )
