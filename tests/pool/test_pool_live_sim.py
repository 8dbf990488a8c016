"""The pure parts of the live pool comparison (benchmarks/pool_live.py): the simulator's fixed pool, the
members the benchmark applies for a trace, and the counters it reads from the pods' /metrics."""

from __future__ import annotations

import pytest

from benchmarks.pool_live import Case, Counters, member_of, parse_counters
from imagefleet.cost import builtin_plan, call_seconds
from imagefleet.pool.replay import Setup, replay
from imagefleet.pool.trace import Request, synthetic
from imagefleet.residency import Move, Residency, checkpoint_mib, move_seconds, swap_cost
from imagefleet_runtime.batcher import Prepared
from imagefleet_runtime.metrics import Metrics

PLAN = builtin_plan(model="sdxl", gpu_class="h100-80gb", precision="fp16")
CKPT_MIB = checkpoint_mib(PLAN.model, "fp16")
CALL = call_seconds(PLAN, width=1024, height=1024, steps=30, images=1)
FIXED = Setup(pool_replicas=2)


def request(time: float, model: str) -> Request:
    return Request(time, model, (), steps=30, images=1)


def test_a_fixed_pool_serves_from_the_start_with_the_family_base_on_each_pod() -> None:
    # The base is resident on both pods, as a pool pod loads it with itself: no cold start, no swap.
    base = replay([request(0.0, "sdxl"), request(0.0, "sdxl")], FIXED, pooled=True)
    assert base.hits == 2 and base.p95_seconds == pytest.approx(CALL)
    assert base.pods_started == 2
    # Another checkpoint is read from disk, with no cold start before it.
    other = replay([request(0.0, "ckpt-00")], FIXED, pooled=True)
    from_disk = move_seconds(swap_cost("h100-80gb"), Move("ckpt-00", None, "disk", "gpu", CKPT_MIB))
    assert other.hits == 0 and other.checkpoint_swaps == 1 and other.host_swaps == 0
    assert other.p95_seconds == pytest.approx(from_disk + CALL)


def test_a_fixed_pool_is_not_resized_by_its_demand() -> None:
    # A minute of back-to-back requests would grow a sized pool; a fixed one keeps its pods.
    trace = [request(t / 2, f"ckpt-{t % 3:02d}") for t in range(120)]
    assert replay(trace, FIXED, pooled=True).pods_started == 2
    assert replay(trace, Setup(), pooled=True).pods_started > 2


def test_a_checkpoint_back_from_host_ram_is_counted_by_its_source() -> None:
    # One GPU slot: b pushes a to host RAM, a comes back from there.
    setup = Setup(gpu_budget_mib=CKPT_MIB, pool_replicas=1)
    result = replay([request(0.0, "a"), request(60.0, "b"), request(120.0, "a")], setup, pooled=True)
    assert result.checkpoint_swaps == 3 and result.host_swaps == 1


def test_the_members_are_the_traces_names_each_adapter_on_its_checkpoint() -> None:
    case = Case(checkpoints=40, adapters=200, minutes=30, rate=1.0)
    members = {body["metadata"]["name"]: body["spec"] for body in case.members()}
    assert len(members) == 240
    assert all(spec["pool"] == case.pool and spec["model"]["family"] == "sdxl" for spec in members.values())
    trace = synthetic(case.seed, case.shape())
    with_adapters = [r for r in trace if r.adapters]
    assert with_adapters
    for r in trace:
        spec = members[member_of(r)]["model"]
        assert spec["name"].endswith("/" + r.model)  # an adapter's member runs on the request's checkpoint
        assert ("adapter" in spec) == bool(r.adapters)


def test_the_counters_are_read_from_the_runtimes_exposition() -> None:
    metrics, residency = Metrics(), Residency(gpu_budget_mib=CKPT_MIB, host_budget_mib=2 * CKPT_MIB, adapter_slots=2)
    for name, requests in (("a", 1), ("b", 2), ("a", 1), ("a", 3)):  # disk, disk, host, hit
        touch = residency.touch(name, CKPT_MIB)
        metrics.record_residency(Prepared(touch, tuple(0.0 for _ in touch.moves), residency.snapshot()), requests)
    counted = parse_counters([metrics.exposition().decode()])
    assert counted.hits == 3 and counted.misses == 4
    assert counted.swaps == {"disk": 2, "host": 1}
    assert (counted - Counters(hits=1, swaps={"disk": 2})).swaps == {"disk": 0, "host": 1}


def test_a_pod_with_a_batch_of_images_waiting_loses_the_next_request_to_a_pod_that_swaps() -> None:
    # As the gateway does: pod 0 holds "a" but 8 images wait at it (one batch is 4), so the third
    # request for "a" goes to pod 1, which reads "a" from disk, instead of waiting for pod 0.
    trace = [Request(0.0, "a", (), 30, 1), Request(0.1, "a", (), 30, 8), Request(0.2, "a", (), 30, 1)]
    result = replay(trace, FIXED, pooled=True)
    assert result.checkpoint_swaps == 2 and result.hits == 1
    # With fewer images waiting than one batch, it waits for pod 0 and is a hit.
    light = [Request(0.0, "a", (), 30, 1), Request(0.1, "a", (), 30, 3), Request(0.2, "a", (), 30, 1)]
    assert replay(light, FIXED, pooled=True).checkpoint_swaps == 1
