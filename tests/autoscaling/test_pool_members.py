"""A pool member's own status from its pool's round (autoscaling.pool_members): pure."""

from __future__ import annotations

from typing import Any

from imagefleet import conditions as c
from imagefleet.autoscaling import batch
from imagefleet.autoscaling.loop import OWNED_FIELDS, merge_patched, owned_status
from imagefleet.autoscaling.pool_members import (
    MEMBER_FIELDS,
    NO_RESIDENCY_SERIES,
    RESIDENCY_READ,
    member_owned_status,
    member_status_patch,
    member_usage,
    read_verdict,
    reporting_pods,
    residency_key,
)
from imagefleet.autoscaling.prometheus import Sample
from imagefleet.crd.models import MAX_LISTED_PODS, ImageModelDeploymentSpec, ImageModelDeploymentStatus
from imagefleet.metrics import GATEWAY_RESOURCE_SECONDS, RESIDENT
from imagefleet_runtime.batcher import AdapterRef, CheckpointRef


def spec(model: dict[str, Any]) -> ImageModelDeploymentSpec:
    return ImageModelDeploymentSpec.model_validate({"model": model, "gpuClass": "cpu", "pool": "shared"})


def resident(pod: str, checkpoint: str, place: str, adapter: str = "") -> Sample:
    return Sample({"__name__": RESIDENT, "namespace": "a", "imagefleet_io_name": "shared-pool", "pod": pod,
                   "checkpoint": checkpoint, "adapter": adapter, "place": place}, 1.0)


SAMPLES = [
    resident("p1", "tiny", "gpu"), resident("p1", "org/fine", "host"),
    resident("p2", "org/fine", "gpu"), resident("p2", "org/fine", "gpu", "org/lora/w.safetensors"),
    resident("p2", "tiny", "host"), resident("p3", "other", "gpu"),
]


def test_a_member_is_named_by_its_checkpoint_and_its_adapter_as_the_pods_name_them() -> None:
    assert residency_key(spec({"name": "tiny"})) == ("tiny", "")
    lora = spec({"name": "org/fine", "family": "tiny", "adapter": {"name": "org/lora", "weightName": "w.safetensors"}})
    assert residency_key(lora) == ("org/fine", "org/lora/w.safetensors")
    assert residency_key(spec({"name": "tiny", "adapter": {"name": "org/lora"}})) == ("tiny", "org/lora")
    pinned = spec({"name": "org/fine", "family": "tiny", "revision": "3f2a9c1"})
    assert residency_key(pinned) == ("org/fine@3f2a9c1", "")
    # The names the runtime's residency (and its imagefleet_resident labels) give the same weights.
    assert residency_key(pinned)[0] == CheckpointRef("org/fine", "3f2a9c1").key
    assert residency_key(lora)[1] == AdapterRef("org/lora", "w.safetensors").key


def test_residency_per_place_and_an_adapter_member_is_on_the_gpu_only_with_its_adapter() -> None:
    base = member_usage(SAMPLES, ("tiny", ""), 0.5, 1.2)
    assert (base.gpu, base.host) == (("p1",), ("p2",))
    fine = member_usage(SAMPLES, ("org/fine", ""), None, None)
    assert (fine.gpu, fine.host) == (("p2",), ("p1",))
    lora = member_usage(SAMPLES, ("org/fine", "org/lora/w.safetensors"), None, None)
    assert (lora.gpu, lora.host) == (("p2",), ("p1",))
    other_adapter = member_usage(SAMPLES, ("org/fine", "org/other"), None, None)
    assert other_adapter.gpu == ()  # the checkpoint is there, its adapter is not: a request would load it
    assert member_usage(SAMPLES, ("absent", ""), None, None).gpu == ()
    assert reporting_pods(SAMPLES) == 3


def test_the_status_is_bounded_and_says_where_the_figures_came_from() -> None:
    many = [resident(f"p{i:02d}", "tiny", "gpu") for i in range(MAX_LISTED_PODS + 4)]
    usage = member_usage(many, ("tiny", ""), 0.123456, 2.34567)
    verdict = read_verdict(reporting_pods(many), ready=len(many), window="rate window 20s")
    patch = member_status_patch({}, usage, verdict, generation=3)
    assert patch is not None
    residency = patch["residency"]
    assert residency["gpuPods"] == MAX_LISTED_PODS + 4 and len(residency["gpu"]) == MAX_LISTED_PODS
    assert residency["hostPods"] == 0 and "host" not in residency
    assert patch["requestsPerSecond"] == 0.12 and patch["p95Seconds"] == 2.346
    condition = c.find(patch["conditions"], c.METRICS_AVAILABLE)
    assert condition is not None and condition["status"] == c.TRUE and condition["reason"] == RESIDENCY_READ
    # The CRD's status model takes it as the autoscaler applies it.
    ImageModelDeploymentStatus.model_validate(member_owned_status(merge_patched({}, patch)))
    # A resource that leaves its pool and scales on its own drops them (and the reverse).
    assert set(MEMBER_FIELDS) & set(OWNED_FIELDS) == {"p95Seconds"}
    assert not {"residency", "requestsPerSecond"} & set(owned_status(merge_patched({}, patch)))


def test_a_member_apply_drops_what_the_autoscaler_owned_while_the_resource_scaled_on_its_own() -> None:
    """A resource autoscaled on its own that joins a pool: its replica figures and Scaling conditions are the
    pool's business now, so the member's apply leaves them out (a server-side apply then removes them)."""
    before = {"desiredReplicas": 3, "queueDepth": 2.0, "autoscaling": {"winner": "queue"}, "p95Seconds": 9.0,
              "conditions": [{"type": "Scaling", "status": "True", "reason": "Queue", "message": "m",
                              "lastTransitionTime": "2026-12-06T10:00:00Z"},
                             {"type": "Ready", "status": "True", "reason": "ServedByPool", "message": "m",
                              "lastTransitionTime": "2026-12-06T10:00:00Z"}]}
    usage = member_usage(SAMPLES, ("tiny", ""), 0.5, 1.2)
    patch = member_status_patch(before, usage, read_verdict(3, 3, "w"), generation=1)
    assert patch is not None
    body = member_owned_status(merge_patched(before, patch))
    assert set(body) == {"p95Seconds", "requestsPerSecond", "residency", "conditions"}
    assert [condition["type"] for condition in body["conditions"]] == [c.METRICS_AVAILABLE]
    assert owned_status(merge_patched(before, patch))["desiredReplicas"] == 3  # what the plain apply would keep


def test_written_only_when_it_changes() -> None:
    usage = member_usage(SAMPLES, ("tiny", ""), 0.5, 1.2)
    verdict = read_verdict(3, 3, "rate window 20s")
    first = member_status_patch({}, usage, verdict, generation=1)
    assert first is not None
    stored = merge_patched({}, first)
    assert member_status_patch(stored, usage, verdict, generation=1) is None
    # A rate that moves in its third digit is no change; a pod that gains it is.
    assert member_status_patch(stored, member_usage(SAMPLES, ("tiny", ""), 0.502, 1.2), verdict,
                               generation=1) is None
    moved = member_status_patch(stored, member_usage(SAMPLES[:1] + [resident("p2", "tiny", "gpu")], ("tiny", ""),
                                                     0.5, 1.2), verdict, generation=1)
    assert moved == {"residency": {"gpuPods": 2, "hostPods": 0, "gpu": ["p1", "p2"]}}


def test_a_failed_read_removes_the_figures_and_says_why() -> None:
    usage = member_usage(SAMPLES, ("tiny", ""), 0.5, 1.2)
    stored = merge_patched({}, member_status_patch({}, usage, read_verdict(3, 3, "w"), generation=1) or {})
    failed = member_status_patch(stored, None, (c.FALSE, "PrometheusUnreachable", "connection refused"),
                                 generation=1)
    assert failed is not None
    after = merge_patched(stored, failed)
    assert not {"residency", "requestsPerSecond", "p95Seconds"} & set(after)
    condition = c.find(after["conditions"], c.METRICS_AVAILABLE)
    assert condition is not None and (condition["status"], condition["reason"]) == (c.FALSE, "PrometheusUnreachable")


def test_ready_pool_pods_without_residency_series_are_reported() -> None:
    status, reason, message = read_verdict(0, 2, "rate window 20s")
    assert (status, reason) == (c.FALSE, NO_RESIDENCY_SERIES) and RESIDENT in message and "scrape" in message
    assert read_verdict(0, 0, "rate window 20s")[:2] == (c.TRUE, RESIDENCY_READ)  # at zero: nothing to report


def test_a_round_with_pools_adds_one_query_whatever_the_members_and_reads_each_members_p95() -> None:
    plain = batch.batch_queries("{}", 20.0)
    pooled = batch.batch_queries("{}", 20.0, pools=True)
    assert len(pooled) == len(plain) + 1 and RESIDENT in pooled[batch.RESIDENT]
    assert GATEWAY_RESOURCE_SECONDS + "_bucket" in plain["gateway"] and '"p95"' in plain["gateway"]


def test_a_round_files_each_members_p95_and_the_pool_pods_residency() -> None:
    round_ = batch.Round(pools=True)
    gateway = {"resource_namespace": "a", "resource_name": "alpha", "signal": batch.GATEWAY_P95}
    round_.series[("a", "alpha")]["gateway"].append(Sample(gateway, 1.5))
    round_.series[("a", "shared-pool")][batch.RESIDENT].extend(SAMPLES)
    assert round_.readings(("a", "alpha"), 60).gateway_p95_seconds == 1.5
    assert round_.resident(("a", "shared-pool")) == SAMPLES and round_.resident(("a", "alpha")) == []
