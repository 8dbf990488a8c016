"""Pool members at the gateway: their endpoints are the pool's, the body carries their weights, the
picker ranks the pool's pods by residency, and a member deleted while requests wait answers 410."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from imagefleet.gateway.errors import Gone, InvalidRequest
from imagefleet.gateway.fleet import Fleet, Resource, resource_from_object, upstream_body
from imagefleet.gateway.picking import Candidate, Picker, PodLoad, ResidentLoad, RoundRobinPicker
from imagefleet.gateway.schemas import parse_request
from imagefleet.gateway.service import Gateway, Settings
from imagefleet.gateway.upstream import LoadAnswer
from imagefleet.catalog import emulation_table, model_catalog
from imagefleet.pool.routing import swap_prices
from imagefleet.residency import checkpoint_mib, swap_cost

UNET_MIB = checkpoint_mib(model_catalog()["sdxl"], "fp16")


def member(name: str, checkpoint: str, *, pool: str = "shared", adapter: dict[str, Any] | None = None,
           target: float | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": checkpoint, "family": "sdxl"}
    if adapter:
        model["adapter"] = adapter
    spec: dict[str, Any] = {"model": model, "gpuClass": "h100-80gb", "pool": pool}
    if target is not None:
        spec["autoscaling"] = {"targetP95Seconds": target}
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec}


def slice_of(service: str, name: str, *hosts: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [{"addresses": [h], "conditions": {"ready": True}} for h in hosts]}


def test_a_member_is_served_by_its_pools_service_with_its_weights_and_prices() -> None:
    resource = resource_from_object(member("pixel", "org/sdxl-ft", adapter={"name": "org/pixel", "weightName": "p.safetensors",
                                                                             "scale": 0.8}))
    assert resource is not None and resource.pool is not None
    assert resource.service_key == ("ns", "shared-pool")
    assert resource.pool.want.checkpoint == "org/sdxl-ft"
    assert resource.pool.want.adapters == ("org/pixel/p.safetensors",)  # as the pod's residency names it
    adapter_mib = emulation_table().models["sdxl"].adapter_mib
    assert adapter_mib is not None
    assert resource.pool.prices == swap_prices(swap_cost("h100-80gb"), UNET_MIB, adapter_mib)
    plain = resource_from_object({"metadata": {"namespace": "ns", "name": "solo"},
                                  "spec": {"model": {"name": "sdxl"}, "gpuClass": "h100-80gb"}})
    assert plain is not None and plain.pool is None and plain.service_key == ("ns", "solo")

    fleet = Fleet()
    fleet.apply_resource("ADDED", member("pixel", "org/sdxl-ft"))
    fleet.apply_slice("ADDED", slice_of("shared-pool", "shared-pool-x", "127.0.0.5"))
    fleet.apply_slice("ADDED", slice_of("pixel", "pixel-x", "127.0.0.9"))  # not the member's: it has no Service
    assert fleet.endpoints(fleet.resources[("ns", "pixel")]) == ("http://127.0.0.5:8000",)


def test_the_body_sent_to_a_pool_pod_names_the_checkpoint_and_adapters() -> None:
    resource = resource_from_object(member("pixel", "org/sdxl-ft", adapter={"name": "org/pixel"}))
    assert resource is not None
    _, body = parse_request(json.dumps({"prompt": "a fox", "model": "pixel", "n": 2}).encode())
    sent = json.loads(upstream_body(resource, body))
    assert sent == {"prompt": "a fox", "n": 2, "checkpoint": {"name": "org/sdxl-ft", "revision": None},
                    "adapters": [{"name": "org/pixel", "weight_name": None, "scale": 1.0}]}
    pinned = member("pinned", "org/sdxl-ft")
    pinned["spec"]["model"]["revision"] = "v2"
    at_revision = resource_from_object(pinned)
    assert at_revision is not None
    assert json.loads(upstream_body(at_revision, body))["checkpoint"] == {"name": "org/sdxl-ft", "revision": "v2"}
    plain = resource_from_object({"metadata": {"namespace": "ns", "name": "solo"},
                                  "spec": {"model": {"name": "sdxl"}, "gpuClass": "h100-80gb"}})
    assert plain is not None and upstream_body(plain, body) == body


@pytest.mark.parametrize("field", ["checkpoint", "adapters"])
def test_a_client_cannot_choose_the_weights(field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"{field}: set by the gateway"):
        parse_request(json.dumps({"prompt": "a fox", field: {"name": "org/anything"}}).encode())


def load(*, gpu: tuple[str, ...] = (), host: tuple[str, ...] = (), queued: int = 0, running: int = 0,
         adapters: tuple[tuple[str, str], ...] = ()) -> PodLoad:
    # A batch of 4 images takes 2 s on these pods; the GPU budget holds two SDXL checkpoints.
    return PodLoad(ready=True, queued=queued, running=running, queue_limit=64, max_batch_size=4, batch_seconds=2.0,
                   observed_at=0.0, resident=ResidentLoad(gpu, host, adapters, 2.5 * UNET_MIB))


def candidates(resource: Resource, loads: dict[str, PodLoad]) -> list[Candidate]:
    return [Candidate(url, resource, pod_load, 0) for url, pod_load in loads.items()]


def test_the_picker_prefers_the_pod_holding_the_checkpoint_and_adapter_while_it_serves_in_time() -> None:
    resource = resource_from_object(member("pixel", "org/ft", adapter={"name": "org/pixel"}, target=10))
    assert resource is not None
    picker = Picker()
    loads = {"http://idle": load(gpu=("sdxl",)),
             "http://holds": load(gpu=("org/ft",), adapters=(("org/ft", "org/pixel"),), queued=8, running=4)}
    assert picker.pick(candidates(resource, loads)).url == "http://holds"  # 3 calls ahead: 6 + 2 s < 10 s
    # Only the checkpoint, not the adapter: the adapter load (0.4 s) is cheaper than waiting 6 s.
    loads["http://holds"] = load(gpu=("org/ft",), queued=8, running=4)
    loads["http://ckpt"] = load(gpu=("org/ft", "sdxl"))
    assert picker.pick(candidates(resource, loads)).url == "http://ckpt"


def test_the_picker_spreads_a_hot_member_once_its_pod_cannot_serve_it_in_time() -> None:
    resource = resource_from_object(member("hot", "org/hot", target=10))
    assert resource is not None
    picker = Picker()
    loads = {"http://holds": load(gpu=("org/hot",), queued=16, running=4),  # 5 calls ahead: 10 + 2 s > 10 s
             "http://host": load(gpu=("sdxl",), host=("org/hot",)), "http://disk": load(gpu=("sdxl",))}
    assert picker.pick(candidates(resource, loads)).url == "http://host"
    # The benchmark's baseline picker knows nothing of residency (nor load): it takes turns.
    baseline = RoundRobinPicker()
    assert {baseline.pick(candidates(resource, loads)).url for _ in range(3)} == set(loads)


def test_a_pool_pods_load_answer_carries_what_is_resident() -> None:
    answer = LoadAnswer.model_validate_json(json.dumps({
        "ready": True, "queued": 0, "running": 1, "queue_limit": 8, "max_batch_size": 4, "batch_seconds": 1.5,
        "resident": {"gpu": ["org/a", "sdxl"], "host": ["org/b"], "adapters": [{"checkpoint": "org/a", "name": "x"}],
                     "gpu_budget_mib": 10000.0, "host_budget_mib": 5000.0}}))
    assert answer.resident is not None
    assert answer.resident.load() == ResidentLoad(("org/a", "sdxl"), ("org/b",), (("org/a", "x"),), 10000.0)


async def test_requests_waiting_for_a_deleted_member_get_410_at_once() -> None:
    gateway = Gateway(Settings(hold_timeout_seconds=60))
    try:
        obj = member("doomed", "org/ft", pool="cold")
        gateway.fleet.apply_resource("ADDED", obj)
        gateway.fleet_changed()
        waiting = asyncio.ensure_future(gateway.generate(json.dumps({"prompt": "a fox", "model": "doomed"}).encode(),
                                                         None))
        lane = ("ns", "doomed", "standard")
        for _ in range(100):  # the pool has no pod: the request waits in its lane
            if gateway.lanes.get(lane) is not None and gateway.lanes[lane].size == 1:
                break
            await asyncio.sleep(0.01)
        assert gateway.lanes[lane].size == 1 and not waiting.done()
        gateway.fleet.apply_resource("DELETED", obj)
        gateway.fleet_changed()
        with pytest.raises(Gone, match="'doomed' \\(standard\\) was deleted while this request waited") as error:
            await asyncio.wait_for(waiting, 5)
        assert error.value.status == 410 and error.value.code == "model_deleted"
        assert gateway.lanes[lane].size == 0 and gateway.slots.held == 0
    finally:
        await gateway.stop()


def test_a_member_at_a_pinned_revision_is_found_where_the_pod_holds_that_revision() -> None:
    """A pool pod names a pinned checkpoint `name@revision` in its residency (the runtime's key): the picker
    goes to the pod holding that revision, with its adapter, and not to one holding another revision."""
    pinned = member("pinned", "org/ft", adapter={"name": "org/pixel"}, target=10)
    pinned["spec"]["model"]["revision"] = "v2"
    resource = resource_from_object(pinned)
    assert resource is not None and resource.pool is not None
    assert resource.pool.want.checkpoint == "org/ft@v2"
    loads = {"http://other-revision": load(gpu=("org/ft",), adapters=(("org/ft", "org/pixel"),)),
             "http://holds": load(gpu=("org/ft@v2",), adapters=(("org/ft@v2", "org/pixel"),), queued=4)}
    assert Picker().pick(candidates(resource, loads)).url == "http://holds"
