"""A real `imagefleet-runtime --pool-family tiny` process (diffusers on CPU) serving three checkpoints
and three LoRA adapters made locally, over real HTTP: residency, identical images across swaps, faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagefleet import metrics as names

from .pool_weights import make_checkpoint, make_corrupt_lora, make_foreign_lora, make_lora
from .support import RunningServer, runtime_server, sample

# A tiny UNet is 0.97 MiB at fp32: two fit the GPU budget, one the host budget.
POOL_FLAGS = ("--pool-family", "tiny", "--gpu-budget-mib", "2", "--host-budget-mib", "1", "--adapter-slots", "2",
              "--default-steps", "3", "--max-batch-size", "2", "--max-width", "64", "--max-height", "64")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool-weights")
    for seed in (1, 2, 3):
        make_checkpoint(root / f"ck{seed}", seed)
        make_lora(root / f"lora{seed}", 10 + seed)
    make_foreign_lora(root / "foreign", 5)
    make_corrupt_lora(root / "corrupt")
    # Same architecture, four times the parameters: above a 2 MiB budget.
    make_checkpoint(root / "wide", 7, unet_channels=(32, 64))
    return root


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("pool"), *POOL_FLAGS) as server:
        yield server


def generate(server: RunningServer, weights: Path, checkpoint: str | None = None, *adapters: str,
             seed: int = 7) -> httpx.Response:
    body: dict[str, Any] = {"prompt": "a lighthouse", "seed": seed}
    if checkpoint is not None:
        body["checkpoint"] = {"name": str(weights / checkpoint)}
    if adapters:
        body["adapters"] = [{"name": str(weights / name)} for name in adapters]
    return httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=120)


def image(server: RunningServer, weights: Path, checkpoint: str | None = None, *adapters: str) -> str:
    response = generate(server, weights, checkpoint, *adapters)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["b64_json"])


def swaps(server: RunningServer, checkpoint: str, source: str) -> float:
    return server.metric(names.SWAPS_TOTAL, checkpoint=checkpoint, source=source)


def test_three_checkpoints_and_three_adapters_on_one_pod(pool: RunningServer, weights: Path) -> None:
    base = image(pool, weights)
    fine_tunes = {name: image(pool, weights, name) for name in ("ck1", "ck2", "ck3")}
    assert len({base, *fine_tunes.values()}) == 4  # each checkpoint draws its own image
    with_lora = {name: image(pool, weights, "ck1", name) for name in ("lora1", "lora2", "lora3")}
    assert len({fine_tunes["ck1"], *with_lora.values()}) == 4  # each adapter changes it
    # lora1 was evicted (two slots) and is loaded again: the same image; without adapters, ck1's own.
    assert image(pool, weights, "ck1", "lora1") == with_lora["lora1"]
    assert image(pool, weights, "ck1") == fine_tunes["ck1"]
    resident = httpx.get(f"{pool.base_url}/v1/load", timeout=10).json()["resident"]
    assert resident["gpu"][0] == str(weights / "ck1") and len(resident["gpu"]) == 2 and len(resident["host"]) == 1
    assert resident["adapters"][0] == {"checkpoint": str(weights / "ck1"), "name": str(weights / "lora1")}
    assert len(resident["adapters"]) == 2 and resident["gpu_budget_mib"] == 2.0
    text = pool.metrics_text()
    assert sample(text, names.RESIDENT, checkpoint=str(weights / "ck1"), adapter="", place="gpu") == 1.0
    assert sample(text, names.ADAPTER_LOADS_TOTAL, checkpoint=str(weights / "ck1")) == 4.0
    assert sample(text, names.RESIDENCY_HITS_TOTAL, checkpoint=str(weights / "ck1")) >= 1.0


def test_same_seed_same_image_after_swapping_away_and_back(pool: RunningServer, weights: Path) -> None:
    base = image(pool, weights)
    first = image(pool, weights, "ck1")
    image(pool, weights, "ck2")
    image(pool, weights, "ck3")  # GPU: ck3, ck2; host: ck1; the base dropped to disk
    from_host, from_disk = swaps(pool, str(weights / "ck1"), "host"), swaps(pool, "tiny", "disk")
    assert image(pool, weights, "ck1") == first
    assert swaps(pool, str(weights / "ck1"), "host") == from_host + 1
    assert image(pool, weights) == base
    assert swaps(pool, "tiny", "disk") == from_disk + 1


@pytest.mark.parametrize(
    ("adapter", "reason"),
    [("missing", "not found"), ("corrupt", "Unable to load weights"), ("foreign", "made for another base")],
)
def test_a_bad_adapter_is_a_400_naming_it_and_the_pod_keeps_serving(
    pool: RunningServer, weights: Path, adapter: str, reason: str
) -> None:
    good = image(pool, weights, "ck1", "lora2")
    response = generate(pool, weights, "ck1", adapter)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "adapter_refused" and error["param"] == "adapters"
    assert str(weights / adapter) in error["message"] and reason in error["message"]
    assert httpx.get(f"{pool.base_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{pool.base_url}/readyz", timeout=10).status_code == 200
    resident = httpx.get(f"{pool.base_url}/v1/load", timeout=10).json()["resident"]
    assert str(weights / adapter) not in {entry["name"] for entry in resident["adapters"]}
    assert image(pool, weights, "ck1", "lora2") == good


def test_a_checkpoint_above_the_budget_is_refused_with_both_figures(pool: RunningServer, weights: Path) -> None:
    response = generate(pool, weights, "wide")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "checkpoint_refused" and error["param"] == "checkpoint"
    assert str(weights / "wide") in error["message"]
    assert "3.8 MiB" in error["message"] and "GPU budget of 2.0 MiB" in error["message"]
    missing = generate(pool, weights, "nowhere")
    assert missing.status_code == 400 and str(weights / "nowhere") in missing.json()["error"]["message"]
    assert image(pool, weights, "ck2")  # still serving


def test_pool_fields_outside_pool_mode_are_a_400(runtime: RunningServer) -> None:
    for field, value in (("checkpoint", {"name": "/models/x"}), ("adapters", [{"name": "/loras/y"}])):
        response = httpx.post(f"{runtime.base_url}/v1/images/generations",
                              json={"prompt": "a lighthouse", field: value}, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "not_a_pool" and error["param"] == field and "not a pool" in error["message"]
    assert httpx.get(f"{runtime.base_url}/v1/load", timeout=10).json()["resident"] is None
