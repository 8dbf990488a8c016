"""Routing by residency over HTTP: the gateway (served on loopback, its fleet fed as the watches
would) in front of two real runtime processes in pool mode on the emulated engine (emulated: SDXL
on an H100, every duration divided by the speedup)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagefleet import metrics as names
from tests.helpers import wait_until
from tests.runtime.support import RunningServer, runtime_server

from .support import RunningGateway, running_gateway

pytestmark = pytest.mark.slow
SPEEDUP = 20.0
# One SDXL UNet (4,896 MiB at fp16) fits each pod's GPU budget, one more its host RAM: two hot
# members on one pod would swap on every change.
POOL = ("--engine", "emulated", "--gpu-class", "h100-80gb", "--model", "sdxl", "--precision", "fp16",
        "--pool-family", "sdxl", "--gpu-budget-mib", "5000", "--host-budget-mib", "5000",
        "--emulation-speedup", str(SPEEDUP), "--default-steps", "4")


@pytest.fixture(scope="module")
def pool_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    with runtime_server(tmp_path_factory.mktemp("pool-a"), *POOL) as first, \
            runtime_server(tmp_path_factory.mktemp("pool-b"), *POOL) as second:
        yield [first, second]


def member(name: str, checkpoint: str, pool: str = "shared", adapter: str | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": checkpoint, "family": "sdxl"}
    if adapter:
        model["adapter"] = {"name": adapter}
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"model": model, "gpuClass": "h100-80gb", "pool": pool}}


def apply(gw: RunningGateway, event: str, obj: dict[str, Any]) -> None:
    gw.call(lambda: gw.gateway.fleet.apply_resource(event, obj) and gw.gateway.fleet_changed())


def post(gw: RunningGateway, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/v1/images/generations", json={"prompt": "a lighthouse", "model": model, **extra},
                      timeout=60)


def total(server: RunningServer, name: str) -> float:
    """A counter summed over all its labels."""
    text = server.metrics_text()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def resident(server: RunningServer) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.base_url}/v1/load", timeout=10).json()["resident"]
    return answer


def polled_holding(gw: RunningGateway, server: RunningServer, checkpoint: str) -> None:
    """Wait until the gateway's poll of the pod shows the checkpoint on its GPU."""
    def seen() -> bool:
        load = gw.gateway.loads.get(server.base_url)
        return load is not None and load.resident is not None and checkpoint in load.resident.gpu
    wait_until(seen, timeout=10, interval=0.05, message=f"a poll of {server.base_url} holding {checkpoint}")


@pytest.fixture
def gateway(pool_pods: list[RunningServer]) -> Iterator[RunningGateway]:
    with running_gateway() as gw:
        for obj in (member("ft-a", "org/fine-tune-a"), member("ft-b", "org/fine-tune-b"),
                    member("pixel", "org/fine-tune-a", adapter="org/pixel-lora")):
            apply(gw, "ADDED", obj)
        gw.set_endpoints("shared-pool", [pod.base_url for pod in pool_pods])
        gw.wait_polled([pod.base_url for pod in pool_pods])
        yield gw


def test_two_hot_members_stay_resident_and_requests_go_where_their_weights_are(
    gateway: RunningGateway, pool_pods: list[RunningServer]
) -> None:
    for model, checkpoint in (("ft-a", "org/fine-tune-a"), ("ft-b", "org/fine-tune-b")):
        assert post(gateway, model).status_code == 200
        holder = next(p for p in pool_pods if checkpoint in resident(p)["gpu"])
        polled_holding(gateway, holder, checkpoint)
    swaps = sum(total(p, names.SWAPS_TOTAL) for p in pool_pods)
    misses = sum(total(p, names.RESIDENCY_MISSES_TOTAL) for p in pool_pods)
    hits = sum(total(p, names.RESIDENCY_HITS_TOTAL) for p in pool_pods)
    # Both members hot at once: 4 clients, 40 requests alternating between them.
    with ThreadPoolExecutor(4) as clients:
        answers = list(clients.map(lambda i: post(gateway, ("ft-a", "ft-b")[i % 2]).status_code, range(40)))
    assert answers == [200] * 40
    # No swap storm: each member kept a pod of its own; not one checkpoint moved, every request hit.
    assert {resident(p)["gpu"][0] for p in pool_pods} == {"org/fine-tune-a", "org/fine-tune-b"}
    assert sum(total(p, names.SWAPS_TOTAL) for p in pool_pods) == swaps
    assert sum(total(p, names.RESIDENCY_MISSES_TOTAL) for p in pool_pods) == misses
    assert sum(total(p, names.RESIDENCY_HITS_TOTAL) for p in pool_pods) == hits + 40


def test_an_adapter_member_runs_its_checkpoint_with_its_lora(
    gateway: RunningGateway, pool_pods: list[RunningServer]
) -> None:
    assert post(gateway, "pixel").status_code == 200
    holders = [p for p in pool_pods if {"checkpoint": "org/fine-tune-a", "name": "org/pixel-lora"}
               in resident(p)["adapters"]]
    assert len(holders) == 1
    refused = post(gateway, "ft-a", checkpoint={"name": "org/anything"})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "checkpoint"


def test_deleting_a_member_finishes_what_its_pods_run_and_answers_410_for_what_waits(
    gateway: RunningGateway, pool_pods: list[RunningServer]
) -> None:
    # Sent to a pod: 100 steps of 8 images take 2.5 s x 100 / 30 x 3.86 / 20 = 1.6 s (emulated).
    answers: dict[str, httpx.Response] = {}
    running = threading.Thread(target=lambda: answers.__setitem__("sent", post(gateway, "ft-b", steps=100, n=8)))
    running.start()
    wait_until(lambda: any(httpx.get(f"{p.base_url}/v1/load", timeout=5).json()["running"] for p in pool_pods),
               timeout=10, interval=0.02, message="the request running on a pool pod")
    # Waiting: a member of a pool with no pod yet.
    apply(gateway, "ADDED", member("cold", "org/fine-tune-c", pool="empty"))
    waiting = threading.Thread(target=lambda: answers.__setitem__("waiting", post(gateway, "cold")))
    waiting.start()
    lane = ("ns", "cold", "standard")
    wait_until(lambda: gateway.call(lambda: lane in gateway.gateway.lanes and gateway.gateway.lanes[lane].size == 1),
               timeout=10, interval=0.02, message="the request waiting in its lane")
    assert "sent" not in answers  # still generating when its member goes
    apply(gateway, "DELETED", member("ft-b", "org/fine-tune-b"))
    apply(gateway, "DELETED", member("cold", "org/fine-tune-c", pool="empty"))
    waiting.join(timeout=10)
    running.join(timeout=30)
    assert answers["sent"].status_code == 200 and len(answers["sent"].json()["data"]) == 8
    gone = answers["waiting"]
    assert gone.status_code == 410, gone.text
    assert gone.json()["error"]["code"] == "model_deleted" and "'cold'" in gone.json()["error"]["message"]
    after = post(gateway, "ft-b")
    assert after.status_code == 404 and json.loads(after.text)["error"]["code"] == "model_not_found"
