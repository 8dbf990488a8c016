"""Planning a reconcile: what to write, the status, and the Events. No cluster."""

from __future__ import annotations

import copy
from typing import Any

from imagefleet import conditions as c
from imagefleet.catalog import load_gpu_classes
from imagefleet.reconcile import Config, Observed, Plan, plan
from imagefleet.reconcile.diff import SPEC_HASH_ANNOTATION
from imagefleet.reconcile.status import REMOVABLE_FIELDS

CONFIG = Config(gpu_classes=load_gpu_classes(), runtime_image="runtime:test")
SPEC = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "replicas": 2}


def _imd(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelDeployment",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1", "generation": generation,
                     "resourceVersion": "10"},
        "spec": spec or SPEC,
        **({"status": status} if status else {}),
    }


def _live(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    """A manifest as the API server would hold it after apply (a few defaults added)."""
    live = copy.deepcopy(manifest)
    live["metadata"] |= {"uid": f"{manifest['kind']}-uid", "resourceVersion": "11", "generation": 1}
    if manifest["kind"] == "Deployment":
        live["spec"]["progressDeadlineSeconds"] = 600
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
        live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
        live["status"] = status
    else:
        live["spec"] |= {"clusterIP": "10.96.0.10", "sessionAffinity": "None"}
    return live


def _applied(status: dict[str, Any], body: dict[str, Any] | None) -> dict[str, Any]:
    """`status` after the operator's server-side apply of `body` (conditions merge by type)."""
    if body is None:
        return status
    merged = {key: value for key, value in status.items() if key not in REMOVABLE_FIELDS}
    merged |= {key: value for key, value in body.items() if key != "conditions"}
    conditions = list(status.get("conditions") or [])
    for condition in body.get("conditions", []):
        conditions = c.set_condition(conditions, condition["type"], condition["status"], condition["reason"],
                                     condition["message"], generation=condition.get("observedGeneration"),
                                     timestamp=condition["lastTransitionTime"])
    merged["conditions"] = conditions
    return merged


def _converge(imd: dict[str, Any], **deployment_status: Any) -> tuple[dict[str, Any], Plan]:
    """Apply the first plan as the API server would; the IMD with its status, and the children."""
    first = plan(Observed(imd, None, None), CONFIG, timestamp="T0")
    assert first.deployment.manifest and first.service.manifest
    deployment = _live(first.deployment.manifest, **deployment_status)
    service = _live(first.service.manifest)
    status = _applied(imd.get("status") or {}, first.status)
    second = plan(Observed({**imd, "status": status}, deployment, service), CONFIG, timestamp="T1")
    status = _applied(status, second.status)
    return {"imd": {**imd, "status": status}, "deployment": deployment, "service": service}, second


def _ready(replicas: int = 2) -> dict[str, Any]:
    return {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = c.find(status.get("conditions"), type_)
    assert found is not None, f"no {type_} condition"
    return dict(found)


def test_new_resource_creates_both_children_and_says_so() -> None:
    first = plan(Observed(_imd(), None, None), CONFIG, timestamp="T0")
    assert first.deployment.action == first.service.action == "apply"
    assert first.deployment.manifest["spec"]["replicas"] == 2  # type: ignore[index]
    assert SPEC_HASH_ANNOTATION in first.deployment.manifest["metadata"]["annotations"]  # type: ignore[index]
    assert [e.reason for e in first.deployment.events] == ["Created"]
    assert first.status is not None
    assert _condition(first.status, "Ready")["reason"] == "Creating"
    assert _condition(first.status, "FitsGPU")["status"] == "True"
    assert _condition(first.status, "MetricsAvailable")["status"] == "Unknown"
    assert first.status["observedGeneration"] == 1 and first.status["desiredReplicas"] == 2
    assert first.status["selector"].startswith("app.kubernetes.io/name=imagefleet-runtime")
    assert first.status["memory"]["estimateMiB"] > 0


def test_converged_resource_plans_no_writes_and_no_events() -> None:
    objects, _ = _converge(_imd(), **_ready())
    again = plan(Observed(objects["imd"], objects["deployment"], objects["service"]), CONFIG, timestamp="T9")
    assert not again.writes and again.events == ()
    assert again.deployment.events == again.service.events == ()


def test_ready_only_once_every_replica_is_ready() -> None:
    objects, second = _converge(_imd(), observedGeneration=1, replicas=2, updatedReplicas=2, readyReplicas=1)
    status = objects["imd"]["status"]
    assert _condition(status, "Ready")["status"] == "False"
    assert _condition(status, "Ready")["reason"] == "ReplicasNotReady"
    assert _condition(status, "Progressing")["status"] == "True"
    assert status["readyReplicas"] == 1 and status["replicas"] == 2
    deployment = copy.deepcopy(objects["deployment"])
    deployment["status"] = _ready()
    ready = plan(Observed(objects["imd"], deployment, objects["service"]), CONFIG, timestamp="T2")
    assert ready.status is not None and _condition(ready.status, "Ready")["status"] == "True"
    assert _condition(ready.status, "Ready")["lastTransitionTime"] == "T2"
    assert _condition(ready.status, "Progressing")["reason"] == "RolloutComplete"
    assert [e.reason for e in ready.events] == ["Ready"]


def test_rollout_in_progress_is_not_ready() -> None:
    objects, _ = _converge(_imd(), **_ready())
    deployment = copy.deepcopy(objects["deployment"])
    deployment["metadata"]["generation"] = 2  # the controller has not seen the change yet
    stale = plan(Observed(objects["imd"], deployment, objects["service"]), CONFIG)
    assert stale.status is not None and _condition(stale.status, "Ready")["reason"] == "RollingOut"
    assert [e.reason for e in stale.events] == ["NotReady"] and stale.events[0].type == "Normal"


def test_spec_change_updates_the_deployment() -> None:
    objects, _ = _converge(_imd(), **_ready())
    imd = copy.deepcopy(objects["imd"])
    imd["metadata"]["generation"] = 2
    imd["spec"] = {**SPEC, "batching": {"maxBatchSize": 1}}
    changed = plan(Observed(imd, objects["deployment"], objects["service"]), CONFIG)
    assert changed.deployment.action == "apply" and changed.service.action == "none"
    assert any("IMAGEFLEET_MAX_BATCH_SIZE" in path for path in changed.deployment.drift)
    assert [e.reason for e in changed.deployment.events] == ["Updated"]
    assert changed.status is not None and changed.status["observedGeneration"] == 2


def test_the_deprecated_batching_delay_warns_once_per_generation_and_changes_nothing() -> None:
    with_delay = {**SPEC, "batching": {"maxBatchSize": 2, "maxDelayMilliseconds": 500}}
    objects, second = _converge(_imd(with_delay), **_ready())
    first = plan(Observed(_imd(with_delay), None, None), CONFIG, timestamp="T0")
    [warning] = [e for e in first.events if e.reason == "DeprecatedField"]
    assert warning.type == "Warning" and "spec.batching.maxDelayMilliseconds" in warning.message
    assert "DeprecatedField" not in [e.reason for e in second.events]  # the same generation: said already
    plain, _ = _converge(_imd({**SPEC, "batching": {"maxBatchSize": 2}}), **_ready())
    assert objects["deployment"]["spec"] == plain["deployment"]["spec"]  # no effect on the pods
    imd = copy.deepcopy(objects["imd"])
    imd["metadata"]["generation"] = 2
    imd["spec"] = {**with_delay, "replicas": 3}
    changed = plan(Observed(imd, objects["deployment"], objects["service"]), CONFIG)
    assert [e.reason for e in changed.events if e.reason == "DeprecatedField"] == ["DeprecatedField"]
    imd["spec"] = {**SPEC, "replicas": 3}
    removed = plan(Observed(imd, objects["deployment"], objects["service"]), CONFIG)
    assert "DeprecatedField" not in [e.reason for e in removed.events]


def test_edited_child_is_restored_with_a_warning() -> None:
    objects, _ = _converge(_imd(), **_ready())
    deployment = copy.deepcopy(objects["deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    drifted = plan(Observed(objects["imd"], deployment, objects["service"]), CONFIG)
    assert drifted.deployment.action == "apply"
    [event] = drifted.deployment.events
    assert (event.type, event.reason) == ("Warning", "DriftCorrected") and "image" in event.message


def test_deleted_child_is_recreated_with_a_warning() -> None:
    objects, _ = _converge(_imd(), **_ready())
    recreated = plan(Observed(objects["imd"], None, objects["service"]), CONFIG)
    assert recreated.deployment.action == "apply"
    assert [(e.type, e.reason) for e in recreated.deployment.events] == [("Warning", "Recreated")]


def test_model_that_does_not_fit_gets_no_deployment() -> None:
    spec = {"model": {"name": "sd35-large"}, "gpuClass": "l4-24gb", "precision": "fp32"}
    first = plan(Observed(_imd(spec), None, None), CONFIG, timestamp="T0")
    assert first.deployment.action == "none" and first.service.action == "apply"
    assert first.status is not None
    fits = _condition(first.status, "FitsGPU")
    assert (fits["status"], fits["reason"]) == ("False", "InsufficientMemory")
    assert str(first.status["memory"]["limitMiB"] // 1024) in fits["message"]
    assert _condition(first.status, "Ready")["reason"] == "DoesNotFit"
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "InsufficientMemory")]


def test_running_model_changed_to_not_fit_loses_its_deployment() -> None:
    objects, _ = _converge(_imd(), **_ready())
    imd = copy.deepcopy(objects["imd"])
    imd["spec"] = {**SPEC, "precision": "fp16"}  # the cpu class has no fp16
    imd["metadata"]["generation"] = 2
    refused = plan(Observed(imd, objects["deployment"], objects["service"]), CONFIG)
    assert refused.deployment.action == "delete"
    assert refused.status is not None and refused.status["replicas"] == 0
    reasons = {e.reason for e in refused.events + refused.deployment.events}
    assert {"Deleted", "UnsupportedPrecision", "NotReady"} <= reasons


def test_fixing_the_spec_rolls_out_without_a_recreated_warning() -> None:
    spec = {"model": {"name": "sd35-large"}, "gpuClass": "l4-24gb", "precision": "fp32"}
    first = plan(Observed(_imd(spec), None, None), CONFIG, timestamp="T0")
    status = _applied({}, first.status)
    fixed = plan(Observed(_imd({**spec, "gpuClass": "a100-80gb"}, status=status, generation=2), None, None), CONFIG)
    assert fixed.deployment.action == "apply"
    assert [e.reason for e in fixed.deployment.events] == ["Created"]
    assert "FitsGPU" in [e.reason for e in fixed.events]


def test_autoscaler_fields_and_conditions_are_left_alone() -> None:
    spec = {**SPEC, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}}
    objects, _ = _converge(_imd(spec), **_ready(1))
    status = copy.deepcopy(objects["imd"]["status"])
    status |= {"queueDepth": 3.0, "p95Seconds": 1.5, "desiredReplicas": 2, "autoscaling": {"winner": "queueDepth"}}
    for type_, reason in (("MetricsAvailable", "MetricsRead"), ("Scaling", "ScaledUp")):
        status["conditions"] = c.set_condition(status["conditions"], type_, "True", reason, "", generation=1)
    imd = {**objects["imd"], "status": status}
    again = plan(Observed(imd, objects["deployment"], objects["service"]), CONFIG)
    assert again.status is None and again.initial_metrics is None


def test_autoscaling_starts_at_the_autoscalers_decision_within_bounds() -> None:
    spec = {**SPEC, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}}
    fresh = plan(Observed(_imd(spec), None, None), CONFIG)
    assert fresh.deployment.manifest["spec"]["replicas"] == 1  # type: ignore[index]
    assert fresh.status is not None and "desiredReplicas" not in fresh.status, "the autoscaler's field"
    decided = plan(Observed(_imd(spec, status={"desiredReplicas": 3}), None, None), CONFIG)
    assert decided.deployment.manifest["spec"]["replicas"] == 3  # type: ignore[index]
    clamped = plan(Observed(_imd(spec, status={"desiredReplicas": 9}), None, None), CONFIG)
    assert clamped.deployment.manifest["spec"]["replicas"] == 3  # type: ignore[index]


def test_autoscaled_deployment_keeps_its_live_count() -> None:
    spec = {**SPEC, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 5}}
    objects, _ = _converge(_imd(spec), **_ready(1))
    deployment = copy.deepcopy(objects["deployment"])
    deployment["spec"]["replicas"] = 4  # scaled by the autoscaler; the status we see may be older
    deployment["status"] = _ready(4)
    steady = plan(Observed(objects["imd"], deployment, objects["service"]), CONFIG)
    assert steady.deployment.action == "none"
    narrowed = copy.deepcopy(objects["imd"])
    narrowed["spec"] = {**spec, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}}
    clamped = plan(Observed(narrowed, deployment, objects["service"]), CONFIG)
    assert clamped.deployment.manifest["spec"]["replicas"] == 2  # type: ignore[index]


def test_metrics_condition_without_autoscaling_is_the_operators() -> None:
    first = plan(Observed(_imd(), None, None), CONFIG)
    assert first.status is not None and first.initial_metrics is None
    metrics = _condition(first.status, "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("Unknown", "AutoscalingDisabled")


def test_metrics_condition_with_autoscaling_starts_unknown_then_is_the_autoscalers() -> None:
    spec = {**SPEC, "autoscaling": {"enabled": True}}
    first = plan(Observed(_imd(spec), None, None), CONFIG)
    assert first.status is not None
    assert [x["type"] for x in first.status["conditions"]] == ["FitsGPU", "Ready", "Progressing"]
    assert first.initial_metrics is not None
    [initial] = first.initial_metrics["conditions"]
    assert (initial["type"], initial["status"], initial["reason"]) == ("MetricsAvailable", "Unknown", "AwaitingMetrics")
    status = _applied(_applied({}, first.status), first.initial_metrics)
    again = plan(Observed(_imd(spec, status=status), None, None), CONFIG)
    assert again.initial_metrics is None


def test_someone_elses_deployment_is_not_taken_over() -> None:
    first = plan(Observed(_imd(), None, None), CONFIG)
    foreign = _live(first.deployment.manifest, **_ready())  # type: ignore[arg-type]
    foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else", "controller": True}]
    blocked = plan(Observed(_imd(), foreign, None), CONFIG)
    assert blocked.deployment.action == blocked.service.action == "none"
    assert blocked.status is not None and _condition(blocked.status, "Ready")["reason"] == "NameConflict"


def test_spec_the_operator_cannot_read_is_reported() -> None:
    broken = plan(Observed(_imd({"gpuClass": "cpu"}), None, None), CONFIG)
    assert broken.deployment.action == "none"
    assert broken.status is not None and _condition(broken.status, "Ready")["reason"] == "InvalidSpec"
