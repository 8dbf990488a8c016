"""The pool autoscaler's decision keeps the pods the pool's working set needs (pure: no Prometheus)."""

from __future__ import annotations

from imagefleet.autoscaling.pool_scaling import MemberSignal, MixSwapPrices, PoolInputs, decide_pool
from imagefleet.crd.models import ImageModelPoolSpec

SPEC = ImageModelPoolSpec.model_validate({"family": "sdxl", "gpuClass": "h100-80gb", "autoscaling": {
    "enabled": True, "minReplicas": 0, "maxReplicas": 60, "scaleDownStabilizationSeconds": 300}})


def inputs(members: list[MemberSignal], working_set: int, replicas: int = 1) -> PoolInputs:
    return PoolInputs(spec=SPEC, replicas=replicas, ready=replicas, members=members, service_seconds=2.0,
                      swap=MixSwapPrices(1.5, 4.5), resident_per_pod=10, host_per_pod=0, window_seconds=60.0,
                      working_set=working_set)


def test_a_trickle_over_many_checkpoints_keeps_the_pods_that_hold_them_and_says_so() -> None:
    trickle = [MemberSignal("a", 0.02, 0, 30), MemberSignal("b", 0.0, 0, 30)]
    assert decide_pool(inputs(trickle, working_set=0), (), now=0.0).desired == 1
    decision = decide_pool(inputs(trickle, working_set=25), (), now=0.0)
    assert decision.desired == 3 and decision.size.residency_floor == 3
    assert "3 pods hold the 25 checkpoints asked for lately" in decision.message


def test_an_idle_pool_still_scales_to_zero_whatever_its_working_set() -> None:
    idle = [MemberSignal("a", 0.0, 0, 30), MemberSignal("b", 0.0, 0, 30)]
    decision = decide_pool(inputs(idle, working_set=25, replicas=3), ((-400.0, 3),), now=0.0)
    assert decision.desired == 0
