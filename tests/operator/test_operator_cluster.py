"""The operator against the real local control plane (KWOK GPU nodes): nothing here is mocked."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.cost import builtin_plan, load_seconds
from tests.conftest import Cluster
from tests.helpers import wait_until

from .conftest import OperatorFactory
from .harness import Imds, OperatorProcess, operator_writes, wait_seconds

TINY = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"}


def _apps(cluster: Cluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client)


def _core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client)


def _deployment(cluster: Cluster, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return _apps(cluster).read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _service(cluster: Cluster, namespace: str, name: str) -> client.V1Service | None:
    try:
        return _core(cluster).read_namespaced_service(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(_core(cluster).list_namespaced_pod(namespace, label_selector=selector).items)


def _pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = _core(cluster).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [event.reason for event in events if event.involved_object.kind == "ImageModelDeployment"]


def _env(deployment: client.V1Deployment) -> dict[str, str]:
    return {item.name: item.value for item in deployment.spec.template.spec.containers[0].env}


def test_valid_resource_runs_on_its_gpu_class_and_is_ready_with_its_pods(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    created = imds.create("portraits", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 2})
    imd = imds.wait_ready("portraits")

    status = imd["status"]
    assert status["observedGeneration"] == imd["metadata"]["generation"]
    assert (status["replicas"], status["readyReplicas"], status["desiredReplicas"]) == (2, 2, 2)
    assert status["memory"]["estimateMiB"] <= status["memory"]["limitMiB"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["FitsGPU"]["status"] == "True" and conditions["Progressing"]["status"] == "False"
    assert conditions["MetricsAvailable"]["status"] == "Unknown"
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in conditions.values())

    deployment = _deployment(cluster, namespace, "portraits")
    service = _service(cluster, namespace, "portraits")
    assert deployment is not None and service is not None
    for child in (deployment, service):
        [owner] = child.metadata.owner_references
        assert (owner.kind, owner.uid, owner.controller) == ("ImageModelDeployment", created["metadata"]["uid"], True)
    assert deployment.spec.strategy.rolling_update.max_surge == 0

    pods = _pods(cluster, namespace, status["selector"])
    assert len(pods) == 2 and all(_pod_ready(pod) for pod in pods)
    for pod in pods:
        node = _core(cluster).read_node(pod.spec.node_name)
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-L4", pod.spec.node_name
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    annotations = imd["metadata"].get("annotations", {})
    assert not [key for key in annotations if "kopf" in key], "no kopf state outside the imagefleet.io prefix"
    assert "kopf" not in imd["status"], "nothing in status that the structural schema would prune"
    assert not imd["metadata"].get("finalizers"), "no finalizer: deleting never waits for the operator"
    reasons = _event_reasons(cluster, namespace, "portraits")
    assert reasons.count("Created") == 1 and reasons.count("Ready") == 1, reasons


def test_ready_stays_false_while_a_replica_cannot_be_scheduled(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    # The simulated fleet has one h200-141gb node with 8 GPUs: the 9th replica stays Pending.
    imds.create("oversubscribed", {"model": {"name": "sd15"}, "gpuClass": "h200-141gb", "replicas": 9})
    wait_until(lambda: imds.get("oversubscribed").get("status", {}).get("readyReplicas") == 8, timeout=60,
               message="8 of 9 replicas ready")
    ready = imds.condition("oversubscribed", "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady")
    assert "8/9" in ready["message"]
    pending = [p for p in _pods(cluster, namespace, "imagefleet.io/name=oversubscribed") if p.spec.node_name is None]
    assert len(pending) == 1


def test_model_that_does_not_fit_gets_no_pods_until_fixed(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("too-big", {"model": {"name": "sd35-large"}, "gpuClass": "l4-24gb", "precision": "fp32"})
    fits = wait_until(lambda: imds.condition("too-big", "FitsGPU"), timeout=30, message="a FitsGPU condition")
    assert (fits["status"], fits["reason"]) == ("False", "InsufficientMemory")
    memory = imds.get("too-big")["status"]["memory"]
    assert f"{memory['estimateMiB'] / 1024:.1f} GiB" in fits["message"]
    assert f"{memory['limitMiB'] / 1024:.1f} GiB usable" in fits["message"]
    wait_until(lambda: "InsufficientMemory" in _event_reasons(cluster, namespace, "too-big"), timeout=15,
               message="an InsufficientMemory event")
    assert _deployment(cluster, namespace, "too-big") is None
    assert _pods(cluster, namespace, "imagefleet.io/name=too-big") == []

    imds.patch_spec("too-big", {"gpuClass": "a100-80gb"})
    # The emulated pod reads ~51 GiB of fp32 weights at the emulated volume's 1,000 MiB/s before it is ready.
    loading = load_seconds(builtin_plan(model="sd35-large", gpu_class="a100-80gb", precision="fp32"))
    imd = imds.wait_ready("too-big", timeout=loading + 60)
    assert imd["status"]["observedGeneration"] == 2
    assert imds.condition("too-big", "FitsGPU")["status"] == "True"  # type: ignore[index]
    assert "FitsGPU" in _event_reasons(cluster, namespace, "too-big")


def test_precision_the_card_cannot_run_is_refused_and_an_existing_deployment_removed(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("t4", {"model": {"name": "sd15"}, "gpuClass": "t4-16gb", "precision": "fp16"})
    imds.wait_ready("t4")
    imds.patch_spec("t4", {"precision": "bf16"})
    wait_until(lambda: (imds.condition("t4", "FitsGPU") or {}).get("reason") == "UnsupportedPrecision",
               timeout=30, message="FitsGPU=False UnsupportedPrecision")
    wait_until(lambda: _deployment(cluster, namespace, "t4") is None, timeout=30, message="the Deployment removed")
    assert "t4-16gb cannot run bf16" in imds.condition("t4", "FitsGPU")["message"]  # type: ignore[index]
    wait_until(lambda: {"Deleted", "UnsupportedPrecision"} <= set(_event_reasons(cluster, namespace, "t4")),
               timeout=15, message="Deleted and UnsupportedPrecision events")


def test_spec_edit_rolls_the_deployment(cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("edit", TINY)
    imds.wait_ready("edit")
    before = _deployment(cluster, namespace, "edit")
    assert before is not None and _env(before)["IMAGEFLEET_MAX_BATCH_SIZE"] == "4"

    imds.patch_spec("edit", {"tier": "premium"})
    wait_until(lambda: _env(_deployment(cluster, namespace, "edit"))["IMAGEFLEET_MAX_BATCH_SIZE"] == "1",  # type: ignore[arg-type]
               timeout=30, message="the premium batch size in the Deployment")
    wait_until(lambda: imds.is_ready("edit") and imds.get("edit")["status"]["observedGeneration"] == 2,
               timeout=60, message="Ready at generation 2")
    after = _deployment(cluster, namespace, "edit")
    assert after is not None and after.metadata.labels["imagefleet.io/tier"] == "premium"
    assert after.metadata.generation > before.metadata.generation
    replica_sets = _apps(cluster).list_namespaced_replica_set(namespace, label_selector="imagefleet.io/name=edit")
    assert len(replica_sets.items) == 2, "the pod template changed: a new ReplicaSet rolled out"
    assert imds.get("edit")["spec"] == {**TINY, "tier": "premium", "replicas": 1, "autoscaling": {"enabled": False},
                                        "rollout": {"maxSurge": 0, "maxUnavailable": 1}}, "the spec is never written"


def test_deleted_or_edited_children_are_restored(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("drift", TINY)
    imds.wait_ready("drift")
    original = _deployment(cluster, namespace, "drift")
    assert original is not None

    _apps(cluster).delete_namespaced_deployment("drift", namespace)
    wait_until(lambda: (d := _deployment(cluster, namespace, "drift")) is not None and d.metadata.uid != original.metadata.uid,
               timeout=30, message="the Deployment recreated")
    imds.wait_ready("drift")

    _apps(cluster).patch_namespaced_deployment(
        "drift", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "runtime", "image": "evil:1"}]}}}}
    )
    wait_until(lambda: _deployment(cluster, namespace, "drift").spec.template.spec.containers[0].image != "evil:1",  # type: ignore[union-attr]
               timeout=30, message="the image restored")

    service_uid = _service(cluster, namespace, "drift").metadata.uid  # type: ignore[union-attr]
    _core(cluster).delete_namespaced_service("drift", namespace)
    wait_until(lambda: (s := _service(cluster, namespace, "drift")) is not None and s.metadata.uid != service_uid,
               timeout=30, message="the Service recreated")
    wait_until(lambda: {"Recreated", "DriftCorrected"} <= set(_event_reasons(cluster, namespace, "drift")),
               timeout=15, message="Recreated and DriftCorrected events")


def test_deleting_the_resource_removes_its_children(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("doomed", TINY)
    imds.wait_ready("doomed")
    imds.delete("doomed")
    wait_until(lambda: _deployment(cluster, namespace, "doomed") is None and _service(cluster, namespace, "doomed") is None,
               timeout=60, message="the garbage collector to remove the Deployment and Service")
    wait_until(lambda: _pods(cluster, namespace, "imagefleet.io/name=doomed") == [], timeout=60, message="no pods")


def test_scale_subresource_sets_replicas_when_autoscaling_is_off(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("scaled", TINY)
    imds.wait_ready("scaled")
    custom = client.CustomObjectsApi(cluster.api_client)
    # What `kubectl scale imd scaled --replicas=3` sends.
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "scaled", {"spec": {"replicas": 3}})
    wait_until(lambda: imds.is_ready("scaled") and imds.get("scaled")["status"]["readyReplicas"] == 3, timeout=60,
               message="3 ready replicas")
    assert _deployment(cluster, namespace, "scaled").spec.replicas == 3  # type: ignore[union-attr]
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "scaled")
    assert scale["status"]["replicas"] == 3 and "imagefleet.io/name=scaled" in scale["status"]["selector"]


def test_printer_columns(cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("columns", {**TINY, "tier": "bulk"})
    imds.wait_ready("columns")
    table = cluster.api_client.call_api(
        *cluster.api_client.param_serialize(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, auth_settings=["BearerToken"],
        )
    )
    body = json.loads(table.read())
    names = [column["name"] for column in body["columnDefinitions"] if column["priority"] == 0]
    assert names == ["Name", "Tier", "Model", "Precision", "GPU", "Ready", "Desired", "P95", "Age"]
    cells = dict(zip([c["name"] for c in body["columnDefinitions"]], body["rows"][0]["cells"], strict=True))
    assert (cells["Tier"], cells["Model"], cells["Precision"], cells["GPU"], cells["Ready"], cells["Desired"]) == (
        "bulk", "tiny", "fp32", "cpu", 1, 1)
    assert cells["Fits"] == "True" and cells["Reason"] == "AllReplicasReady"


def test_status_written_by_others_survives_operator_reconciles(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    imds.create("shared", {**TINY, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}})
    imds.wait_ready("shared")
    # The autoscaler (no Prometheus is configured here) takes MetricsAvailable over from its initial Unknown.
    metrics = wait_until(
        lambda: (m := imds.condition("shared", "MetricsAvailable")) is not None and m["reason"] != "AwaitingMetrics"
        and m,
        timeout=60, message="the autoscaler's MetricsAvailable",
    )
    # Another controller's condition, written the way the autoscaler writes (merge patch of the list).
    conditions = imds.get("shared")["status"]["conditions"] + [
        {"type": "ExternalCheck", "status": "True", "reason": "Checked", "message": "from a test",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    client.CustomObjectsApi(cluster.api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "shared", {"status": {"conditions": conditions}},
        _content_type="application/merge-patch+json",
    )
    imds.patch_spec("shared", {"tier": "premium"})
    wait_until(lambda: imds.is_ready("shared") and imds.get("shared")["status"]["observedGeneration"] == 2,
               timeout=60, message="Ready at generation 2")
    assert imds.condition("shared", "ExternalCheck") is not None, "the operator's apply kept it"
    assert imds.condition("shared", "MetricsAvailable")["reason"] == metrics["reason"]  # type: ignore[index]


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory
) -> None:
    names = [f"fleet-{index}" for index in range(30)]
    imds = Imds(cluster.api_client, namespace)
    first = operator_factory(namespace)
    for name in names:
        imds.create(name, TINY)
    wait_until(lambda: _apps(cluster).list_namespaced_deployment(namespace).items, timeout=30, interval=0.02,
               message="the first Deployment")
    first.kill()
    made = len(_apps(cluster).list_namespaced_deployment(namespace).items)

    operator_factory(namespace)
    for name in names:
        imds.wait_ready(name, timeout=90)
    deployments = _apps(cluster).list_namespaced_deployment(namespace).items
    services = _core(cluster).list_namespaced_service(namespace).items
    replica_sets = _apps(cluster).list_namespaced_replica_set(namespace).items
    pods = [p for p in _core(cluster).list_namespaced_pod(namespace).items if p.metadata.deletion_timestamp is None]
    assert sorted(d.metadata.name for d in deployments) == sorted(names)
    assert sorted(s.metadata.name for s in services) == sorted(names)
    assert len(replica_sets) == len(names) and len(pods) == len(names)
    for name in names:
        assert _event_reasons(cluster, namespace, name).count("Created") <= 1
    print(f"killed the operator after {made} of {len(names)} Deployments existed")


def test_steady_state_makes_no_writes(cluster: Cluster, namespace: str, operator_factory: OperatorFactory) -> None:
    operator_factory(namespace, env={"IMAGEFLEET_RESYNC_SECONDS": "10"})
    imds = Imds(cluster.api_client, namespace)
    imds.create("steady-cpu", TINY)
    imds.create("steady-gpu", {"model": {"name": "sdxl"}, "gpuClass": "l4-24gb", "replicas": 2, "tier": "standard"})
    imds.create("steady-nofit", {"model": {"name": "flux1-dev"}, "gpuClass": "t4-16gb"})
    imds.wait_ready("steady-cpu")
    imds.wait_ready("steady-gpu")
    wait_until(lambda: imds.condition("steady-nofit", "FitsGPU"), timeout=30, message="FitsGPU on steady-nofit")
    audit_log = cluster.plane.audit_log
    assert operator_writes(audit_log, 0, namespace), "the audit log shows the operator's writes (it can see them)"
    wait_until(lambda: not operator_writes(audit_log, time.time() - 5, namespace), timeout=60,
               message="5 s without operator writes")

    def versions() -> dict[str, Any]:
        apps, core = _apps(cluster), _core(cluster)
        found: dict[str, Any] = {f"imd/{n}": imds.get(n)["metadata"]["resourceVersion"]
                                 for n in ("steady-cpu", "steady-gpu", "steady-nofit")}
        found |= {f"deployment/{d.metadata.name}": d.metadata.resource_version
                  for d in apps.list_namespaced_deployment(namespace).items}
        found |= {f"service/{s.metadata.name}": s.metadata.resource_version
                  for s in core.list_namespaced_service(namespace).items}
        found["events"] = sorted(e.metadata.name for e in core.list_namespaced_event(namespace).items
                                 if e.involved_object.kind == "ImageModelDeployment")
        return found

    before = versions()
    started = time.time()
    wait_seconds(60)  # the observation window itself: six resyncs happen in it
    writes = operator_writes(audit_log, started, namespace)
    assert writes == [], [(w["verb"], w["objectRef"], w["userAgent"]) for w in writes]
    assert versions() == before
