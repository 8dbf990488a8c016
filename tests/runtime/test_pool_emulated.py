"""Pool mode on the emulated engine: a real runtime process keeps residency like a real pod and waits
the priced time of each move (emulated: catalog bandwidths, divided by the speedup)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from imagefleet import metrics as names
from imagefleet.catalog import emulation_table, model_catalog
from imagefleet.residency import checkpoint_mib, swap_cost
from imagefleet_runtime.batcher import AdapterRef, BatchKey, CheckpointRef
from imagefleet_runtime.emulated.engine import load_emulated
from imagefleet_runtime.errors import AdapterRefused
from imagefleet_runtime.settings import Settings

from .support import RunningServer, runtime_server

SPEEDUP = 20.0
# Two SDXL UNets (4,896 MiB each at fp16) on the GPU, one in host RAM.
POOL = ("--engine", "emulated", "--gpu-class", "h100-80gb", "--model", "sdxl", "--precision", "fp16",
        "--pool-family", "sdxl", "--gpu-budget-mib", "10000", "--host-budget-mib", "5000",
        "--emulation-speedup", str(SPEEDUP), "--default-steps", "4")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("emulated-pool"), *POOL) as server:
        yield server


def post(server: RunningServer, checkpoint: str | None, *adapters: str) -> tuple[float, dict[str, Any]]:
    body: dict[str, Any] = {"prompt": "a lighthouse", "seed": 3}
    if checkpoint is not None:
        body["checkpoint"] = {"name": checkpoint}
    if adapters:
        body["adapters"] = [{"name": name} for name in adapters]
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return time.monotonic() - started, response.json()


def test_moves_take_their_priced_time_and_are_counted(pool: RunningServer) -> None:
    cost = swap_cost("h100-80gb")
    assert cost.host_to_gpu_mib_per_second is not None
    unet = checkpoint_mib(model_catalog()["sdxl"], "fp16")
    from_disk = (unet / cost.disk_to_host_mib_per_second + unet / cost.host_to_gpu_mib_per_second) / SPEEDUP
    elapsed, first = post(pool, "org/fine-tune-a")
    assert elapsed >= from_disk  # a sleep never ends early
    assert pool.metric(names.SWAP_SECONDS + "_sum", kind="checkpoint", source="disk") == pytest.approx(from_disk)
    _, again = post(pool, "org/fine-tune-a")
    assert again["data"] == first["data"]
    assert pool.metric(names.RESIDENCY_HITS_TOTAL, checkpoint="org/fine-tune-a") == 1.0
    assert pool.metric(names.RESIDENCY_MISSES_TOTAL, checkpoint="org/fine-tune-a") == 1.0
    _, other = post(pool, "org/fine-tune-b")  # the base goes to host RAM
    assert other["data"] != first["data"]
    post(pool, None)  # the base back from host: fine-tune-a out over PCIe (counted with it), the base in
    back = 2 * unet / cost.host_to_gpu_mib_per_second / SPEEDUP
    assert pool.metric(names.SWAP_SECONDS + "_sum", kind="checkpoint", source="host") == pytest.approx(back)
    assert pool.metric(names.SWAPS_TOTAL, checkpoint="sdxl", source="host") == 1.0
    adapter = emulation_table().models["sdxl"].adapter_mib
    assert adapter is not None
    post(pool, None, "org/pixel-lora")
    lora = (adapter / cost.disk_to_host_mib_per_second + adapter / cost.host_to_gpu_mib_per_second
            + cost.adapter_load_seconds) / SPEEDUP
    assert pool.metric(names.SWAP_SECONDS + "_sum", kind="adapter", source="disk") == pytest.approx(lora)
    resident = httpx.get(f"{pool.base_url}/v1/load", timeout=10).json()["resident"]
    assert resident["gpu"] == ["sdxl", "org/fine-tune-b"] and resident["host"] == ["org/fine-tune-a"]
    assert resident["adapters"] == [{"checkpoint": "sdxl", "name": "org/pixel-lora"}]
    assert pool.metric(names.RESIDENT, checkpoint="org/fine-tune-a", adapter="", place="host") == 1.0


def test_a_family_without_an_adapter_figure_refuses_adapters_naming_it() -> None:
    settings = Settings(engine="emulated", gpu_class="h100-80gb", precision="bf16", pool_family="flux1-schnell",
                        gpu_budget_mib=30000, host_budget_mib=0, emulation_speedup=10000)
    engine = load_emulated(settings)
    with pytest.raises(AdapterRefused, match="'org/flux-lora'.*no adapter size for flux1-schnell"):
        engine.prepare(BatchKey(1024, 1024, 4, 0.0, CheckpointRef("org/flux-ft"), (AdapterRef("org/flux-lora"),)))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"gpu_budget_mib": 4000}, r"sdxl checkpoint needs 4,896 MiB at fp16, above gpu_budget_mib 4,000"),
        ({"host_budget_mib": None}, "pool mode needs --gpu-budget-mib and --host-budget-mib"),
        ({"pool_family": "sdxl-turbo"}, "not a catalog model"),
        ({"fuse_qkv": True}, "fuse_qkv: not supported in pool mode"),
    ],
)
def test_pool_settings_are_checked(overrides: dict[str, Any], reason: str) -> None:
    given = {"engine": "emulated", "gpu_class": "h100-80gb", "precision": "fp16", "pool_family": "sdxl",
             "gpu_budget_mib": 10000, "host_budget_mib": 5000, **overrides}
    with pytest.raises(ValidationError, match=reason):
        Settings(**given)


def test_budgets_need_pool_mode() -> None:
    with pytest.raises(ValidationError, match="need pool_family"):
        Settings(gpu_budget_mib=1000)
    assert Settings(pool_family="tiny", gpu_budget_mib=10, host_budget_mib=0).model == "tiny"
