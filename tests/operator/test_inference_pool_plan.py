"""The InferencePool in a plan: built only when asked for and when its CRD is installed (pure, no cluster)."""

from __future__ import annotations

from typing import Any

from imagefleet import GROUP, VERSION
from imagefleet.builders import EndpointPicker
from imagefleet.catalog import load_gpu_classes
from imagefleet.reconcile.plan import Config, Observed, plan

CONFIG = Config(gpu_classes=load_gpu_classes(), runtime_image="runtime:test",
                endpoint_picker=EndpointPicker("{name}-picker", 9100))


def _imd(enabled: bool | None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    routing = {} if enabled is None else {"inferencePool": {"enabled": enabled}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
        "metadata": {"name": "sdxl-bulk", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "tier": "bulk",
                 "routing": routing},
        "status": status or {},
    }


def _condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in (status or {}).get("conditions", []) if c["type"] == type_), None)


def test_asked_for_and_installed_the_pool_selects_the_runtime_pods_and_names_the_picker() -> None:
    planned = plan(Observed(_imd(True), None, None, pool_crd_installed=True), CONFIG)
    assert planned.inference_pool.action == "apply"
    pool = planned.inference_pool.manifest
    assert pool is not None and pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"] == planned.deployment.manifest["spec"]["selector"]["matchLabels"]
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {"name": "sdxl-bulk-picker", "port": {"number": 9100}}
    assert pool["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    condition = _condition(planned.status, "InferencePoolReady")
    assert condition is not None and (condition["status"], condition["reason"]) == ("True", "PoolConfigured")
    assert "Created" in [e.reason for e in planned.inference_pool.events]


def test_asked_for_without_the_crd_the_condition_says_so_and_nothing_is_written() -> None:
    planned = plan(Observed(_imd(True), None, None, pool_crd_installed=False), CONFIG)
    assert planned.inference_pool.action == "none"
    condition = _condition(planned.status, "InferencePoolReady")
    assert condition is not None and (condition["status"], condition["reason"]) == ("False", "CRDNotInstalled")
    assert "inferencepools.inference.networking.k8s.io" in condition["message"]
    assert ("Warning", "CRDNotInstalled") in [(e.type, e.reason) for e in planned.events]
    # The CRD arrives: True, and a Normal Event for the change.
    installed = plan(Observed(_imd(True, planned.status), None, None, pool_crd_installed=True), CONFIG)
    assert ("Normal", "InferencePoolReady") in [(e.type, e.reason) for e in installed.events]


def test_not_asked_for_no_pool_and_no_condition_and_a_left_over_pool_is_deleted() -> None:
    for enabled in (None, False):
        planned = plan(Observed(_imd(enabled), None, None, pool_crd_installed=True), CONFIG)
        assert planned.inference_pool.action == "none"
        assert _condition(planned.status, "InferencePoolReady") is None
    first = plan(Observed(_imd(True), None, None, pool_crd_installed=True), CONFIG)
    live = {**first.inference_pool.manifest, "metadata": {**first.inference_pool.manifest["metadata"], "uid": "p"}}
    disabled = plan(Observed(_imd(False), None, None, inference_pool=live, pool_crd_installed=True), CONFIG)
    assert disabled.inference_pool.action == "delete"


def test_a_live_pool_that_matches_is_left_alone_and_one_of_someone_else_is_not_taken_over() -> None:
    first = plan(Observed(_imd(True), None, None, pool_crd_installed=True), CONFIG)
    live = first.inference_pool.manifest
    assert live is not None
    steady = plan(Observed(_imd(True, first.status), None, None, inference_pool=live, pool_crd_installed=True), CONFIG)
    assert steady.inference_pool.action == "none"
    foreign = {**live, "metadata": {**live["metadata"], "ownerReferences": [{"uid": "other", "controller": True}]}}
    taken = plan(Observed(_imd(True), None, None, inference_pool=foreign, pool_crd_installed=True), CONFIG)
    assert taken.inference_pool.action == "none"
    condition = _condition(taken.status, "InferencePoolReady")
    assert condition is not None and (condition["status"], condition["reason"]) == ("False", "NameConflict")
