"""The pool autoscaler's decision from its members' demand (pure: no Prometheus, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagefleet.autoscaling.loop import pool_status
from imagefleet.autoscaling.pool_scaling import (
    POOL_SCALED_TO_ZERO,
    POOL_WOKEN,
    MemberSignal,
    MixSwapPrices,
    PoolInputs,
    decide_pool,
    host_per_pod,
    mix_swap_load,
    mix_swap_prices,
    resident_per_pod,
)
from imagefleet.catalog import model_catalog
from imagefleet.crd.models import ImageModelPoolSpec
from imagefleet.pool.sizing import MemberDemand, pool_replicas, swap_load
from imagefleet.residency import Residency, checkpoint_mib, swap_cost, swap_seconds

SPEC = ImageModelPoolSpec.model_validate({"family": "sdxl", "gpuClass": "h100-80gb", "autoscaling": {
    "enabled": True, "minReplicas": 0, "maxReplicas": 60, "scaleDownStabilizationSeconds": 300}})


def _inputs(members: list[MemberSignal], replicas: int = 1, ready: int = 1, **changes: float) -> PoolInputs:
    return PoolInputs(spec=SPEC, replicas=replicas, ready=ready, members=members,
                      service_seconds=changes.get("service", 2.0),
                      swap=MixSwapPrices(changes.get("swap", 1.5), changes.get("swap", 1.5) + 3.0),
                      resident_per_pod=int(changes.get("resident", 2)), host_per_pod=int(changes.get("host", 2)),
                      window_seconds=60.0)


def test_the_pool_is_sized_from_the_sum_of_its_members_with_the_swaps_of_the_mix() -> None:
    members = [MemberSignal("hot", 1.5, 0, 30), MemberSignal("warm", 0.4, 0, 30), MemberSignal("tail-a", 0.1, 0, 30),
               MemberSignal("tail-b", 0.1, 0, 30), MemberSignal("tail-c", 0.1, 0, 30)]
    decision = decide_pool(_inputs(members, replicas=1, ready=1), (), now=0.0)
    # The same figures pool.sizing gives for this mix: 2 GPU slots (1 pod x 2), the next 2 members in host
    # RAM swap from there (1.5 s), the last one from disk (4.5 s).
    rates = {m.name: m.arrival_rate for m in members}
    swaps = mix_swap_load(rates, 2, 2, MixSwapPrices(1.5, 4.5))
    assert swaps == pytest.approx((0.1 + 0.1) * 1.5 + 0.1 * 4.5)
    assert swaps == swap_load(rates, 2, 1.5) + swap_load(rates, 4, 3.0)
    expected = pool_replicas([MemberDemand(m.name, m.arrival_rate, 2.0, 30) for m in members], swap_seconds=swaps,
                             min_replicas=0, max_replicas=60, ready=1, starting=0)
    assert decision.desired == expected.replicas and 1 < decision.desired < 60
    assert decision.size.demand_gpu_seconds == sum(rates.values()) * 2.0
    assert decision.size.dedicated.get("hot"), "a member whose demand alone fills pods gets them"
    assert decision.active_members == 5
    # More demand from the same members asks for more pods.
    doubled = [MemberSignal(m.name, m.arrival_rate * 2, 0, 30) for m in members]
    assert decide_pool(_inputs(doubled), (), now=0.0).desired > decision.desired


def test_min_zero_scales_the_pool_to_zero_only_as_a_whole_after_the_window() -> None:
    idle = [MemberSignal("a", 0.0, 0, 30), MemberSignal("b", 0.0, 0, 30)]
    one_busy = [MemberSignal("a", 0.0, 0, 30), MemberSignal("b", 0.05, 0, 30)]
    assert decide_pool(_inputs(one_busy, replicas=1), (), now=0.0).desired == 1
    first = decide_pool(_inputs(one_busy, replicas=1), (), now=0.0)
    # Idle now, but within the scale-down window the earlier recommendation holds the pod.
    held = decide_pool(_inputs(idle, replicas=1), first.history, now=100.0)
    assert held.desired == 1
    gone = decide_pool(_inputs(idle, replicas=1), held.history, now=400.0)
    assert gone.desired == 0 and gone.reason == POOL_SCALED_TO_ZERO


def test_any_members_demand_wakes_a_pool_at_zero() -> None:
    queued = decide_pool(_inputs([MemberSignal("a", 0.0, 0, 30), MemberSignal("b", 0.0, 3, 30)], replicas=0,
                                 ready=0), (), now=0.0)
    assert queued.desired >= 1 and queued.reason == POOL_WOKEN
    # The gateway's demand-at on a member (fresh) wakes it before any series exists.
    annotated = decide_pool(_inputs([MemberSignal("a", 0.0, 0, 30, demand_age_seconds=5.0)], replicas=0, ready=0),
                            (), now=0.0)
    assert annotated.desired == 1
    stale = decide_pool(_inputs([MemberSignal("a", 0.0, 0, 30, demand_age_seconds=600.0)], replicas=0, ready=0),
                        (), now=0.0)
    assert stale.desired == 0


def test_resident_checkpoints_per_pod_and_the_status_written() -> None:
    assert resident_per_pod(70_000, 4896.0) == 14 and resident_per_pod(100, 4896.0) == 1
    decision = decide_pool(_inputs([MemberSignal("a", 0.5, 0, 30)], replicas=0, ready=0), (), now=0.0)
    now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    wanted = pool_status({}, decision, changed=True, now=now)
    assert wanted == {"desiredReplicas": decision.desired, "lastScaleTime": "2026-12-06T10:00:00Z",
                      "autoscaling": {"demandGpuSeconds": 1.0, "swapSeconds": 0.0, "activeMembers": 1}}
    # Written once: the same decision again finds nothing to change.
    assert pool_status(wanted, decision, changed=False, now=now) is None


def test_a_swap_is_priced_as_the_residency_model_moves_it_from_host_ram_or_from_disk() -> None:
    """The live pool and the replay charge the same move the same seconds: with every member served in the
    order of its rate (the busiest last), the swap the residency model makes for a member
    (`residency.swap_seconds`, what the replay charges) costs what `mix_swap_load` counts for its rank."""
    sdxl = model_catalog()["sdxl"]
    mib = checkpoint_mib(sdxl, "fp16")
    cost = swap_cost("h100-80gb")
    prices = mix_swap_prices(cost, mib, keeps_host=True)
    assert 0 < prices.from_host < prices.from_disk
    gpu_slots, host_slots = 2, 3
    ranked = [f"m{i}" for i in range(8)]  # busiest first
    rates = {name: 8.0 - rank for rank, name in enumerate(ranked)}
    charged = 0.0  # what the residency model charges for the mix, member by member
    for rank, name in enumerate(ranked):
        pod = Residency(gpu_budget_mib=gpu_slots * mib + 1, host_budget_mib=host_slots * mib + 1, adapter_slots=1)
        for other in reversed(ranked):  # the busiest served last
            pod.touch(other, mib)
        touch = pod.touch(name, mib)
        tier = "gpu" if rank < gpu_slots else "host" if rank < gpu_slots + host_slots else "disk"
        assert touch.source == tier
        assert swap_seconds(cost, touch) == {"gpu": 0.0, "host": prices.from_host, "disk": prices.from_disk}[tier]
        charged += rates[name] * swap_seconds(cost, touch)
    assert mix_swap_load(rates, gpu_slots, host_slots, prices) == pytest.approx(charged)
    assert host_per_pod(10_000, 4896.0) == 2 and host_per_pod(0, 4896.0) == 0
    # Without a host budget nothing waits in host RAM: every swap is from disk, the evicted one dropped.
    no_host = mix_swap_prices(cost, mib, keeps_host=False)
    assert no_host.from_host == no_host.from_disk < prices.from_disk
