"""spec.disruption (a PodDisruptionBudget child) and spec.topologySpread (the pods' spread constraints):
the builders and the plan, pure (the cluster test is in test_disruption_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from imagefleet import GROUP, VERSION
from imagefleet.builders import Owner, build_deployment, build_pod_disruption_budget
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.reconcile.diff import SPEC_HASH_ANNOTATION
from imagefleet.reconcile.plan import Config, Observed, plan
from imagefleet.resolve import resolve

CLASSES = load_gpu_classes()
CONFIG = Config(gpu_classes=CLASSES, runtime_image="runtime:test")
OWNER = Owner(name="portraits", namespace="team-a", uid="uid-1")


def _spec(**fields: Any) -> ImageModelDeploymentSpec:
    return ImageModelDeploymentSpec.model_validate({"model": {"name": "sdxl"}, "gpuClass": "l4-24gb", **fields})


def _imd(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid, "generation": 1},
        "spec": {"model": {"name": "sdxl"}, "gpuClass": "l4-24gb", **fields},
    }


@pytest.mark.parametrize(("given", "budget"), [
    ({"maxUnavailable": 1}, {"maxUnavailable": 1}),
    ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
])
def test_budget_selects_the_runtime_pods_and_is_owned(given: dict[str, Any], budget: dict[str, Any]) -> None:
    spec = _spec(disruption=given)
    assert spec.disruption is not None
    pdb = build_pod_disruption_budget(OWNER, spec.tier, spec.disruption)
    deployment = build_deployment(OWNER, resolve(spec, CLASSES), 2, "runtime:test")
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == OWNER.name and pdb["metadata"]["namespace"] == OWNER.namespace
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {k: v for k, v in pdb["spec"].items() if k.endswith("vailable")} == budget
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_topology_spread_constrains_the_pods_of_the_current_revision() -> None:
    spec = _spec(topologySpread=[{"topologyKey": "topology.kubernetes.io/zone"},
                                 {"topologyKey": "kubernetes.io/hostname", "maxSkew": 2,
                                  "whenUnsatisfiable": "DoNotSchedule"}])
    deployment = build_deployment(OWNER, resolve(spec, CLASSES), 3, "runtime:test")
    selector = deployment["spec"]["selector"]
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]},
    ]
    plain = build_deployment(OWNER, resolve(_spec(), CLASSES), 3, "runtime:test")
    assert "topologySpreadConstraints" not in plain["spec"]["template"]["spec"]


def test_bad_spread_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="whenUnsatisfiable"):
        _spec(topologySpread=[{"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "Never"}])
    with pytest.raises(ValidationError, match="maxSkew"):
        _spec(topologySpread=[{"topologyKey": "kubernetes.io/hostname", "maxSkew": 0}])


def test_plan_creates_the_budget_then_leaves_it_then_deletes_it_when_the_field_goes() -> None:
    created = plan(Observed(_imd(disruption={"maxUnavailable": 1}), None, None), CONFIG)
    child = created.disruption_budget
    assert child.action == "apply" and child.manifest is not None
    assert child.manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert [(e.reason, e.message) for e in child.events] == [
        ("Created", "created PodDisruptionBudget portraits over the runtime pods: maxUnavailable 1")]
    live = {**child.manifest, "metadata": {**child.manifest["metadata"], "uid": "pdb-uid"}}
    steady = plan(Observed(_imd(disruption={"maxUnavailable": 1}), None, None, disruption_budget=live), CONFIG)
    assert steady.disruption_budget.action == "none"
    changed = plan(Observed(_imd(disruption={"minAvailable": 1}), None, None, disruption_budget=live), CONFIG)
    assert changed.disruption_budget.action == "apply"
    assert changed.disruption_budget.manifest is not None
    assert changed.disruption_budget.manifest["spec"]["minAvailable"] == 1
    assert [e.reason for e in changed.disruption_budget.events] == ["Updated"]
    removed = plan(Observed(_imd(), None, None, disruption_budget=live), CONFIG)
    assert removed.disruption_budget.action == "delete"
    assert [e.message for e in removed.disruption_budget.events] == [
        "deleted PodDisruptionBudget portraits: spec.disruption was removed"]
    assert plan(Observed(_imd(), None, None), CONFIG).disruption_budget.action == "none"


def test_plan_leaves_a_budget_someone_else_owns_alone() -> None:
    foreign = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": "x",
                            "ownerReferences": [{"controller": True, "uid": "someone-else"}]},
               "spec": {"maxUnavailable": 0}}
    for fields in ({"disruption": {"maxUnavailable": 1}}, {}):
        planned = plan(Observed(_imd(**fields), None, None, disruption_budget=foreign), CONFIG)
        assert planned.disruption_budget.action == "none"
