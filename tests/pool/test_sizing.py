"""Pool sizing: members' demand in GPU-seconds plus swap seconds, through the queueing model."""

from __future__ import annotations

import pytest

from imagefleet.autoscaling.sizing import replicas_for
from imagefleet.pool.sizing import (
    WORKING_SET_SECONDS,
    MemberDemand,
    pool_replicas,
    residency_floor,
    swap_load,
    working_set,
)


def member(name: str, rate: float, work: float = 1.0, target: float = 2.2, queued: float = 0.0) -> MemberDemand:
    return MemberDemand(name, arrival_rate=rate, work_seconds=work, target_p95_seconds=target, queued=queued)


def test_members_share_pods_sized_on_their_summed_demand() -> None:
    # 4 members of 0.5 req/s at 1 GPU-second each: lambda 2, mu 1. With 3 pods the p95 wait is
    # 0.5 ln((4/9) / 0.05) = 1.09 s, within the 2.2 - 1 = 1.2 s slack; 2 pods cannot keep up.
    members = [member(f"m{i}", 0.5) for i in range(4)]
    size = pool_replicas(members, swap_seconds=0.0, min_replicas=0, max_replicas=20, ready=3)
    assert size.replicas == 3
    assert size.dedicated == {}
    assert size.demand_gpu_seconds == pytest.approx(2.0)
    # Alone, each would need 2 (one pod's p95 wait is ln(10) = 2.3 s): 8 in all.
    alone = pool_replicas([members[0]], swap_seconds=0.0, min_replicas=0, max_replicas=20, ready=2)
    assert alone.replicas == 2


def test_swap_seconds_are_work_that_needs_pods() -> None:
    members = [member(f"m{i}", 0.5) for i in range(4)]
    without = pool_replicas(members, swap_seconds=0.0, min_replicas=0, max_replicas=20, ready=3)
    with_swaps = pool_replicas(members, swap_seconds=1.0, min_replicas=0, max_replicas=20, ready=3)
    # Each request now takes (2 + 1) / 2 = 1.5 s on average: lambda 2 at mu 2/3 needs more than 3.
    expected = replicas_for(arrival_rate=2.0, batch_seconds=1.5, batch_size=1.0, queue=0.0, ready=3, starting=0,
                            target_p95_seconds=2.2, startup_seconds=60.0)
    assert expected is not None and expected > without.replicas
    assert with_swaps.replicas == expected
    assert with_swaps.swap_seconds == 1.0


def test_work_is_priced_in_gpu_seconds_not_requests() -> None:
    # The same request rate at twice the GPU-seconds per request needs more pods.
    light = pool_replicas([member("a", 1.0, work=0.5, target=3.0)], swap_seconds=0.0, min_replicas=0,
                          max_replicas=20, ready=1)
    heavy = pool_replicas([member("a", 1.0, work=1.0, target=3.0)], swap_seconds=0.0, min_replicas=0,
                          max_replicas=20, ready=1)
    assert light.demand_gpu_seconds == pytest.approx(0.5)
    assert heavy.demand_gpu_seconds == pytest.approx(1.0)
    assert heavy.replicas > light.replicas


def test_a_member_that_fills_pods_gets_them_and_does_not_share_swaps() -> None:
    hot = member("hot", 3.0)  # 3 GPU-seconds per second: fills 3 pods and more
    tail = [member(f"t{i}", 0.05) for i in range(6)]
    size = pool_replicas([hot, *tail], swap_seconds=0.5, min_replicas=0, max_replicas=50, ready=8)
    own = replicas_for(arrival_rate=3.0, batch_seconds=1.0, batch_size=1.0, queue=0.0,
                       ready=int(8 * 3.0 / (3.0 + 0.3 + 0.5)), starting=0, target_p95_seconds=2.2,
                       startup_seconds=60.0)
    assert size.dedicated == {"hot": own}
    assert own >= 4  # lambda 3 at mu 1 needs more than 3
    assert size.shared >= 1
    assert size.replicas == own + size.shared


def test_the_pool_scales_to_zero_only_as_a_whole() -> None:
    idle = [member("a", 0.0), member("b", 0.0)]
    assert pool_replicas(idle, swap_seconds=0.0, min_replicas=0, max_replicas=10).replicas == 0
    # One member with a request waiting keeps a pod for all of them.
    waiting = [member("a", 0.0), member("b", 0.0, queued=1)]
    assert pool_replicas(waiting, swap_seconds=0.0, min_replicas=0, max_replicas=10).replicas == 1
    # A tiny demand is a pod, never zero.
    trickle = [member("a", 0.001), member("b", 0.0)]
    assert pool_replicas(trickle, swap_seconds=0.0, min_replicas=0, max_replicas=10, ready=1).replicas == 1
    assert pool_replicas(idle, swap_seconds=0.0, min_replicas=2, max_replicas=10).replicas == 2


def test_max_replicas_bounds_the_total() -> None:
    members = [member("hot", 5.0), member("other", 2.0)]
    size = pool_replicas(members, swap_seconds=0.0, min_replicas=0, max_replicas=4, ready=4)
    assert size.replicas == 4
    assert sum(size.dedicated.values()) + size.shared > 4  # what the demand asked for, before the bound


def test_a_request_longer_than_the_target_is_sized_by_gpu_seconds_and_says_why() -> None:
    size = pool_replicas([member("slow", 0.5, work=3.0, target=2.0)], swap_seconds=0.0, min_replicas=0,
                         max_replicas=10, ready=1)
    assert size.replicas == 2  # ceil(1.5 GPU-seconds per second)
    assert size.unsized is not None and "2s p95 target" in size.unsized


def test_swap_load_counts_the_members_beyond_the_resident_ones() -> None:
    rates = {"a": 1.0, "b": 0.5, "c": 0.1, "d": 0.05, "idle": 0.0}
    assert swap_load(rates, resident_slots=2, swap_seconds=2.0) == pytest.approx((0.1 + 0.05) * 2.0)
    assert swap_load(rates, resident_slots=4, swap_seconds=2.0) == 0.0
    assert swap_load(rates, resident_slots=0, swap_seconds=1.0) == pytest.approx(1.65)


def test_an_active_pool_keeps_the_pods_its_working_set_needs_on_the_gpus() -> None:
    # A trickle that one pod serves, over 25 checkpoints asked for lately, 10 to a pod's GPU.
    trickle = [member(f"m{i}", 0.01) for i in range(3)]
    by_demand = pool_replicas(trickle, swap_seconds=0.0, min_replicas=0, max_replicas=10, ready=1)
    assert by_demand.replicas == 1 and by_demand.residency_floor == 0
    size = pool_replicas(trickle, swap_seconds=0.0, min_replicas=0, max_replicas=10, ready=1,
                         working_set=25, resident_slots=10)
    assert size.replicas == 3 and size.residency_floor == 3
    assert residency_floor(20, 10) == 2 and residency_floor(21, 10) == 3 and residency_floor(0, 10) == 0


def test_demand_above_the_working_sets_floor_sizes_the_pool() -> None:
    busy = [member("hot", 5.0), member("other", 2.0)]
    alone = pool_replicas(busy, swap_seconds=0.0, min_replicas=0, max_replicas=50, ready=8)
    floored = pool_replicas(busy, swap_seconds=0.0, min_replicas=0, max_replicas=50, ready=8,
                            working_set=12, resident_slots=10)
    assert alone.replicas > 2 and floored.replicas == alone.replicas


def test_the_working_sets_floor_holds_only_while_the_pool_is_active_and_within_max_replicas() -> None:
    idle = [member("a", 0.0), member("b", 0.0)]
    size = pool_replicas(idle, swap_seconds=0.0, min_replicas=0, max_replicas=10, working_set=80, resident_slots=10)
    assert size.replicas == 0 and size.residency_floor == 0  # the pool still scales to zero as a whole
    bounded = pool_replicas([member("a", 0.01)], swap_seconds=0.0, min_replicas=0, max_replicas=4, ready=1,
                            working_set=80, resident_slots=10)
    assert bounded.replicas == 4 and bounded.residency_floor == 4


def test_the_working_set_is_the_checkpoints_asked_for_within_its_window() -> None:
    last_asked = {"a": 0.0, "b": 1000.0, "c": 1799.0}
    assert working_set(last_asked, now=1800.0) == 3
    assert working_set(last_asked, now=1800.0 + 1.0) == 2  # "a" is older than WORKING_SET_SECONDS
    assert working_set(last_asked, now=WORKING_SET_SECONDS + 1000.0) == 2
    assert working_set({}, now=0.0) == 0
