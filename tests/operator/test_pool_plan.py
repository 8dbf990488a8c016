"""Planning an ImageModelPool and its members: the shared Deployment, budgets, status and member conditions.
No cluster."""

from __future__ import annotations

import copy
from typing import Any

from imagefleet import conditions as c
from imagefleet.builders.deployment import build_deployment
from imagefleet.builders.labels import Owner
from imagefleet.builders.network_policy import RuntimeIngress
from imagefleet.builders.pool import POOL_LABEL, base_spec
from imagefleet.catalog import load_gpu_classes, model_catalog
from imagefleet.crd.models import ImageModelDeploymentStatus, ImageModelPoolSpec, ImageModelPoolStatus
from imagefleet.fit import INSUFFICIENT_MEMORY
from imagefleet.poolbudget import budgets, checkpoint_mib
from imagefleet.reconcile import Config, Observed, plan
from imagefleet.reconcile.member import FAMILY_MISMATCH, POOL_NOT_FOUND, POOL_NOT_READY, SERVED_BY_POOL
from imagefleet.builders.labels import selector_labels
from imagefleet.reconcile.plan import CREATED, DELETED
from imagefleet.reconcile.pool import PoolObserved, plan_pool
from imagefleet.resolve import resolve

CLASSES = load_gpu_classes()
CONFIG = Config(gpu_classes=CLASSES, runtime_image="runtime:test")
PEERS = RuntimeIngress(generation=({"podSelector": {"matchLabels": {"app": "gateway"}}},),
                       metrics=({"podSelector": {"matchLabels": {"app": "prometheus"}}},))
POOL_SPEC = {"family": "tiny", "gpuClass": "cpu", "replicas": 2}


def _pool(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelPool",
            "metadata": {"name": "shared", "namespace": "ns", "uid": "pool-uid", "generation": 1},
            "spec": spec or POOL_SPEC, **({"status": status} if status else {})}


def _member(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": f"{name}-uid", "generation": 1},
            "spec": {"gpuClass": "cpu", **spec}, **({"status": status} if status else {})}


def _live(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    live = copy.deepcopy(manifest)
    live["metadata"] |= {"uid": f"{manifest['kind']}-uid", "resourceVersion": "11", "generation": 1}
    live["status"] = status
    return live


def test_the_pool_deployment_is_an_imd_deployment_in_pool_mode_owned_by_the_pool() -> None:
    planned = plan_pool(PoolObserved(_pool(), None, None), CONFIG, timestamp="T0")
    manifest = planned.deployment.manifest
    assert manifest is not None and planned.service.manifest is not None
    assert manifest["metadata"]["name"] == "shared-pool" and planned.service.manifest["metadata"]["name"] == "shared-pool"
    assert manifest["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelPool", "name": "shared", "uid": "pool-uid",
        "controller": True, "blockOwnerDeletion": True}
    assert manifest["metadata"]["labels"][POOL_LABEL] == "shared"
    template = manifest["spec"]["template"]
    assert template["metadata"]["labels"][POOL_LABEL] == "shared"
    assert manifest["spec"]["replicas"] == 2
    # The same pod as an ImageModelDeployment of the family on the class: security context, probes, resources.
    resolved = resolve(base_spec(ImageModelPoolSpec.model_validate(POOL_SPEC)), CLASSES)
    reference = build_deployment(Owner("shared-pool", "ns", "pool-uid"), resolved, 2, "runtime:test")
    pod, reference_pod = template["spec"], reference["spec"]["template"]["spec"]
    assert pod["securityContext"] == reference_pod["securityContext"]
    container, reference_container = pod["containers"][0], reference_pod["containers"][0]
    for key in ("securityContext", "startupProbe", "livenessProbe", "readinessProbe", "resources", "lifecycle"):
        assert container[key] == reference_container[key], key
    env = {item["name"]: item["value"] for item in container["env"]}
    expected = budgets(model_catalog()["tiny"], "fp32", CLASSES["cpu"], None, None)
    assert env["IMAGEFLEET_MODEL"] == "tiny" and env["IMAGEFLEET_POOL_FAMILY"] == "tiny"
    assert env["IMAGEFLEET_GPU_BUDGET_MIB"] == str(expected.gpu_mib)
    assert env["IMAGEFLEET_HOST_BUDGET_MIB"] == str(expected.host_mib)
    assert planned.status is not None
    assert planned.status["gpuBudgetMiB"] == expected.gpu_mib and planned.status["members"] == 0
    assert planned.status["selector"] == ("app.kubernetes.io/name=imagefleet-runtime,"
                                          "app.kubernetes.io/instance=shared-pool,imagefleet.io/name=shared-pool")


def _declared(model: type[Any]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_status_field_written_is_declared_in_the_crd() -> None:
    """The API server refuses a status apply with an undeclared field (a structural schema)."""
    planned = plan_pool(PoolObserved(_pool(), None, None), CONFIG)
    assert planned.status is not None and set(planned.status) <= _declared(ImageModelPoolStatus)
    member = _member("m", {"model": {"name": "tiny"}, "pool": "shared"})
    served = plan(Observed(member, None, None, model_pool=_pool()), CONFIG)
    assert served.status is not None and set(served.status) <= _declared(ImageModelDeploymentStatus)


def test_adding_a_member_changes_the_count_and_no_pod_template() -> None:
    first = plan_pool(PoolObserved(_pool(), None, None), CONFIG, timestamp="T0")
    assert first.deployment.manifest and first.service.manifest and first.status
    deployment = _live(first.deployment.manifest, observedGeneration=1, replicas=2, updatedReplicas=2,
                       readyReplicas=2)
    service = _live(first.service.manifest)
    pool = _pool(status=first.status)
    members = (_member("a", {"model": {"name": "tiny"}, "pool": "shared"}),
               _member("b", {"model": {"name": "tiny", "adapter": {"name": "loras/pixel"}}, "pool": "shared"}))
    again = plan_pool(PoolObserved(pool, deployment, service, members=members), CONFIG, timestamp="T1")
    assert [child.action for child in again.children] == ["none", "none", "none", "none"]
    assert again.status is not None and again.status["members"] == 2


def test_budgets_and_fit() -> None:
    small = plan_pool(PoolObserved(_pool({"family": "sdxl", "gpuClass": "l4-24gb", "memory": {"gpuMiB": 100}}),
                                   None, None), CONFIG, timestamp="T0")
    assert small.deployment.action == "none" and small.status is not None
    fits = c.find(small.status["conditions"], c.FITS_GPU)
    needed = checkpoint_mib(model_catalog()["sdxl"], "fp16")
    assert fits is not None and fits["status"] == c.FALSE and fits["reason"] == INSUFFICIENT_MEMORY
    assert "100 MiB" in fits["message"] and f"{needed} MiB" in fits["message"]
    ready = c.find(small.status["conditions"], c.READY)
    assert ready is not None and ready["status"] == c.FALSE
    given = plan_pool(PoolObserved(_pool({"family": "sdxl", "gpuClass": "l4-24gb",
                                          "memory": {"gpuMiB": 9000, "hostMiB": 20000}}), None, None), CONFIG)
    assert given.deployment.manifest is not None
    env = {item["name"]: item["value"] for item in given.deployment.manifest["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert (env["IMAGEFLEET_GPU_BUDGET_MIB"], env["IMAGEFLEET_HOST_BUDGET_MIB"]) == ("9000", "20000")


def test_network_policy_follows_the_operator_configuration() -> None:
    config = Config(gpu_classes=CLASSES, runtime_image="runtime:test", runtime_ingress=PEERS)
    planned = plan_pool(PoolObserved(_pool(), None, None), config)
    manifest = planned.network_policy.manifest
    assert manifest is not None and manifest["metadata"]["name"] == "shared-pool"
    [created] = planned.network_policy.events
    assert created.message.startswith("created NetworkPolicy shared-pool:")
    assert manifest["spec"]["podSelector"]["matchLabels"]["imagefleet.io/name"] == "shared-pool"
    assert manifest["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}], "ports": [{"port": "http", "protocol": "TCP"}]},
        {"from": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
         "ports": [{"port": "metrics", "protocol": "TCP"}]},
    ]
    assert plan_pool(PoolObserved(_pool(), None, None), CONFIG).network_policy.action == "none"


def test_autoscaled_pool_keeps_the_live_count_within_its_range() -> None:
    spec = {**POOL_SPEC, "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 3}}
    first = plan_pool(PoolObserved(_pool(spec), None, None), CONFIG)
    assert first.deployment.manifest is not None and first.deployment.manifest["spec"]["replicas"] == 0
    live = _live(first.deployment.manifest)
    live["spec"]["replicas"] = 2  # the autoscaler's patch
    again = plan_pool(PoolObserved(_pool(spec), live, None), CONFIG)
    assert again.deployment.action == "none" or again.deployment.manifest["spec"]["replicas"] == 2  # type: ignore[index]
    assert again.status is not None and "desiredReplicas" not in again.status


def _member_plan(member: dict[str, Any], pool: dict[str, Any] | None, deployment: dict[str, Any] | None,
                 **children: Any) -> Any:
    return plan(Observed(member, children.get("own_deployment"), children.get("own_service"),
                         model_pool=pool, model_pool_deployment=deployment), CONFIG, timestamp="T0")


def test_a_member_has_no_deployment_and_its_ready_follows_the_pool() -> None:
    pool_plan = plan_pool(PoolObserved(_pool(), None, None), CONFIG)
    assert pool_plan.deployment.manifest is not None
    member = _member("pixel", {"model": {"name": "tiny", "adapter": {"name": "loras/pixel"}}, "pool": "shared"})
    waiting = _member_plan(member, _pool(), _live(pool_plan.deployment.manifest, replicas=2, readyReplicas=0))
    assert [child.action for child in waiting.children] == ["none"] * 5
    assert waiting.status is not None
    ready = c.find(waiting.status["conditions"], c.READY)
    assert ready is not None and (ready["status"], ready["reason"]) == (c.FALSE, POOL_NOT_READY)
    served = _member_plan(member, _pool(), _live(pool_plan.deployment.manifest, replicas=2, readyReplicas=2))
    assert served.status is not None
    ready = c.find(served.status["conditions"], c.READY)
    assert ready is not None and (ready["status"], ready["reason"]) == (c.TRUE, SERVED_BY_POOL)
    assert "shared" in ready["message"] and "loras/pixel" in ready["message"]
    assert served.status["pool"] == "shared" and served.status["readyReplicas"] == 2


def test_a_member_without_its_pool_or_of_another_family_says_so() -> None:
    member = _member("lost", {"model": {"name": "org/finetune", "family": "sdxl"}, "pool": "shared"})
    missing = _member_plan(member, None, None)
    assert missing.status is not None and "pool" not in missing.status
    ready = c.find(missing.status["conditions"], c.READY)
    assert ready is not None and (ready["status"], ready["reason"]) == (c.FALSE, POOL_NOT_FOUND)
    assert "shared" in ready["message"]
    mismatch = _member_plan(member, _pool(), None)
    assert mismatch.status is not None
    ready = c.find(mismatch.status["conditions"], c.READY)
    assert ready is not None and (ready["status"], ready["reason"]) == (c.FALSE, FAMILY_MISMATCH)
    assert "family sdxl" in ready["message"] and "family tiny" in ready["message"]


def test_a_resource_that_joins_a_pool_releases_its_own_children() -> None:
    standalone = _member("moving", {"model": {"name": "tiny"}, "replicas": 1})
    first = plan(Observed(standalone, None, None), CONFIG)
    assert first.deployment.manifest and first.service.manifest
    own_deployment, own_service = _live(first.deployment.manifest), _live(first.service.manifest)
    own_deployment["metadata"]["ownerReferences"][0]["uid"] = "moving-uid"
    joined = _member("moving", {"model": {"name": "tiny"}, "pool": "shared"})
    planned = _member_plan(joined, _pool(), None, own_deployment=own_deployment, own_service=own_service)
    assert (planned.deployment.action, planned.service.action) == ("delete", "delete")
    assert any("joined ImageModelPool shared" in event.message for event in planned.deployment.events)


def test_spec_disruption_gives_the_pools_pods_a_budget_owned_by_the_pool_and_removing_it_deletes_it() -> None:
    assert plan_pool(PoolObserved(_pool(), None, None), CONFIG).disruption_budget.action == "none"
    spec = {**POOL_SPEC, "disruption": {"maxUnavailable": 1}}
    planned = plan_pool(PoolObserved(_pool(spec), None, None), CONFIG, timestamp="T0")
    budget = planned.disruption_budget
    assert budget.action == "apply" and budget.manifest is not None
    manifest, deployment = budget.manifest, planned.deployment.manifest
    assert deployment is not None
    assert manifest["kind"] == "PodDisruptionBudget" and manifest["metadata"]["name"] == "shared-pool"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "pool-uid"
    assert manifest["metadata"]["labels"][POOL_LABEL] == "shared"
    # The same budget as an ImageModelDeployment's, over exactly the pool's pods.
    assert manifest["spec"] == {"selector": {"matchLabels": selector_labels("shared-pool")}, "maxUnavailable": 1,
                                "unhealthyPodEvictionPolicy": "AlwaysAllow"}
    assert manifest["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert any(event.reason == CREATED and "maxUnavailable 1" in event.message for event in budget.events)
    live = _live(manifest)
    kept = plan_pool(PoolObserved(_pool(spec), None, None, disruption_budget=live), CONFIG, timestamp="T0")
    assert kept.disruption_budget.action == "none"
    removed = plan_pool(PoolObserved(_pool(), None, None, disruption_budget=live), CONFIG, timestamp="T0")
    assert removed.disruption_budget.action == "delete"
    assert [event.reason for event in removed.disruption_budget.events] == [DELETED]
    foreign = {**live, "metadata": {**live["metadata"], "ownerReferences": []}}
    assert plan_pool(PoolObserved(_pool(), None, None, disruption_budget=foreign), CONFIG,
                     timestamp="T0").disruption_budget.action == "none"
