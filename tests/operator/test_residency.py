"""The pure residency model (LRU over GPU, host RAM and disk) and its pricing, against hand-computed values."""

from __future__ import annotations

import pytest

from imagefleet.catalog import emulation_table, model_catalog
from imagefleet.residency import (
    Adapter,
    CheckpointTooLarge,
    Move,
    Residency,
    SwapCost,
    checkpoint_mib,
    move_seconds,
    shared_mib,
    swap_cost,
    swap_seconds,
)

# Round figures so every expected value below is worked out by hand.
COST = SwapCost(host_to_gpu_mib_per_second=10_000, disk_to_host_mib_per_second=1_000, adapter_load_seconds=0.1)


def pod(gpu: float = 10_000, host: float = 20_000, slots: int = 2) -> Residency:
    return Residency(gpu_budget_mib=gpu, host_budget_mib=host, adapter_slots=slots)


def test_first_touch_loads_from_disk_then_hits() -> None:
    residency = pod()
    first = residency.touch("a", 4_000)
    assert first.source == "disk" and not first.hit
    assert first.moves == (Move("a", None, "disk", "gpu", 4_000),)
    # 4000 MiB / 1000 MiB/s from disk + 4000 / 10000 over PCIe = 4.4 s
    assert swap_seconds(COST, first) == pytest.approx(4.4)
    again = residency.touch("a", 4_000)
    assert again.hit and again.moves == () and swap_seconds(COST, again) == 0.0


def test_lru_pushes_the_least_recent_to_host_then_disk() -> None:
    residency = pod(gpu=10_000, host=8_000)
    for name in ("a", "b"):  # 8000 of 10000 MiB on the GPU
        residency.touch(name, 4_000)
    residency.touch("a", 4_000)  # a is now the most recent: b goes first
    c = residency.touch("c", 4_000)
    assert c.moves == (Move("b", None, "gpu", "host", 4_000), Move("c", None, "disk", "gpu", 4_000))
    # b out over PCIe 0.4 s, c in from disk 4.0 + 0.4 s
    assert swap_seconds(COST, c) == pytest.approx(4.8)
    assert residency.snapshot().gpu == ("c", "a") and residency.snapshot().host == ("b",)
    d = residency.touch("d", 4_000)  # evicts a to host (room for two there: 8000 MiB)
    e = residency.touch("e", 4_000)  # evicts c to host: host is full, so b (the oldest there) drops to disk
    assert d.evictions == (Move("a", None, "gpu", "host", 4_000),)
    assert e.evictions == (Move("b", None, "host", "disk", 4_000), Move("c", None, "gpu", "host", 4_000))
    assert residency.place("b") == "disk" and residency.snapshot().host == ("c", "a")
    back = residency.touch("a", 4_000)  # from host: d out to host (beside c), a in over PCIe
    assert back.source == "host"
    assert back.moves == (
        Move("d", None, "gpu", "host", 4_000),
        Move("a", None, "host", "gpu", 4_000),
    )
    assert swap_seconds(COST, back) == pytest.approx(0.8)  # 0.4 out + 0.4 in
    assert residency.snapshot().host == ("d", "c")


def test_a_checkpoint_larger_than_the_host_budget_is_dropped_to_disk() -> None:
    residency = pod(gpu=6_000, host=3_000)
    residency.touch("big", 5_000)
    other = residency.touch("other", 5_000)
    assert other.evictions == (Move("big", None, "gpu", "disk", 5_000),)
    # dropping costs nothing; other comes from disk: 5.0 + 0.5 s
    assert swap_seconds(COST, other) == pytest.approx(5.5)


def test_too_large_for_the_gpu_budget_names_both_figures() -> None:
    with pytest.raises(CheckpointTooLarge, match=r"12,000 MiB.*GPU budget of 10,000 MiB"):
        pod().touch("huge", 12_000)


def test_adapters_are_lru_by_slot_and_leave_with_their_checkpoint() -> None:
    residency = pod(slots=2)
    one = residency.touch("a", 4_000, [Adapter("pixel", 200)])
    assert one.adapters_loaded == ("pixel",)
    # a from disk 4.4 s; pixel from disk 0.2 + over PCIe 0.02 + load work 0.1 s
    assert swap_seconds(COST, one) == pytest.approx(4.4 + 0.32)
    switch = residency.touch("a", 4_000, [Adapter("ink", 200)])
    assert switch.source == "gpu" and not switch.hit and switch.adapters_loaded == ("ink",)
    assert swap_seconds(COST, switch) == pytest.approx(0.32)
    assert residency.touch("a", 4_000, [Adapter("pixel", 200)]).hit
    third = residency.touch("a", 4_000, [Adapter("neon", 100)])  # slots full: ink is the least recent
    assert third.moves == (Move("a", "ink", "gpu", "disk", 200), Move("a", "neon", "disk", "gpu", 100))
    assert residency.snapshot().adapters == (("a", "neon"), ("a", "pixel"))
    residency.touch("b", 4_000)
    residency.touch("b", 4_000)
    evicting = residency.touch("c", 4_000)  # a leaves the GPU with its two adapters
    assert evicting.moves[:3] == (
        Move("a", "pixel", "gpu", "disk", 200),
        Move("a", "neon", "gpu", "disk", 100),
        Move("a", None, "gpu", "host", 4_000),
    )
    assert residency.snapshot().adapters == ()


def test_more_adapters_than_slots_in_one_request_is_refused() -> None:
    with pytest.raises(ValueError, match="3 adapters in one request, above the pod's 2 adapter slots"):
        pod(slots=2).touch("a", 1_000, [Adapter(n, 1) for n in "xyz"])


def test_forget_releases_gpu_host_and_adapters() -> None:
    residency = pod(gpu=5_000)
    residency.touch("a", 4_000, [Adapter("pixel", 10)])
    residency.touch("b", 4_000)
    assert residency.place("a") == "host"
    assert residency.forget("a") == (Move("a", None, "host", "disk", 4_000),)
    assert residency.forget("b") == (Move("b", None, "gpu", "disk", 4_000),)
    assert residency.snapshot().gpu == () and residency.snapshot().host == ()


def test_cpu_class_has_no_host_to_gpu_copy() -> None:
    cost = swap_cost("cpu")
    assert cost.host_to_gpu_mib_per_second is None
    assert move_seconds(cost, Move("a", None, "host", "gpu", 4_000)) == 0.0
    assert move_seconds(cost, Move("a", None, "disk", "gpu", 1_000)) == pytest.approx(1.0)  # 1000 MiB/s volume


def test_catalog_figures_cite_a_source() -> None:
    table = emulation_table()
    for name, cls in table.classes.items():
        assert cls.host_to_gpu_source.split(":")[0] in {"measured", "derived", "measured here", "none"}, name
    for name, model in table.models.items():
        assert (model.adapter_mib is None) == (model.adapter_mib_source is None), name
    assert table.lora.load_seconds_source


def test_sdxl_denoiser_and_shared_components() -> None:
    sdxl = model_catalog()["sdxl"]
    # UNet 2.567 B parameters x 2 bytes = 4896.2 MiB; CLIP-L + bigG + VAE 0.902 B x 2 = 1720.4 MiB
    assert checkpoint_mib(sdxl, "fp16") == pytest.approx(2.567e9 * 2 / 2**20)
    assert shared_mib(sdxl, "fp16") == pytest.approx(0.902e9 * 2 / 2**20)


def test_unknown_class_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="h100-80gb"):
        swap_cost("v100")
