"""The semantic 'desired is contained in live' comparison behind drift correction."""

from __future__ import annotations

import copy
from typing import Any

from imagefleet.reconcile.diff import SPEC_HASH_ANNOTATION, differences, spec_hash, with_spec_hash

DESIRED: dict[str, Any] = {
    "metadata": {"name": "a", "labels": {"x": "1"}, "ownerReferences": [{"uid": "u1", "controller": True}]},
    "spec": {
        "replicas": 1,
        "template": {"spec": {
            "containers": [{
                "name": "runtime",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}},
                "securityContext": {"capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        }},
    },
}


def _live() -> dict[str, Any]:
    """DESIRED as the API server returns it: defaults filled in, other managers' fields added."""
    live = copy.deepcopy(DESIRED)
    live["metadata"]["labels"]["added-by-user"] = "yes"
    live["metadata"]["resourceVersion"] = "7"
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    container["terminationMessagePath"] = "/dev/termination-log"
    container["env"].insert(0, {"name": "USER_ADDED", "value": "x"})
    container["resources"]["requests"]["memory"] = "1024Mi"
    live["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    return live




def test_defaults_and_other_managers_fields_are_no_drift() -> None:
    assert differences(DESIRED, _live()) == []


def test_changed_value_is_drift() -> None:
    live = _live()
    live["spec"]["template"]["spec"]["containers"][0]["env"][2]["value"] = "changed"
    assert differences(DESIRED, live) == [".spec.template.spec.containers[name=runtime].env[name=B].value"]


def test_missing_item_and_field_are_drift() -> None:
    live = _live()
    del live["spec"]["template"]["spec"]["containers"][0]["env"][1]
    live["spec"]["replicas"] = 3
    assert differences(DESIRED, live) == [
        ".spec.replicas", ".spec.template.spec.containers[name=runtime].env[name=A]"]


def test_atomic_lists_compare_whole() -> None:
    live = _live()
    live["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] = ["ALL", "X"]
    assert differences(DESIRED, live) == [".spec.template.spec.containers[name=runtime].securityContext.capabilities.drop"]


def test_quantities_compare_by_value_only_under_resources() -> None:
    live = _live()
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "0.25"
    assert differences(DESIRED, live) == []
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "500m"
    assert differences(DESIRED, live) == [
        ".spec.template.spec.containers[name=runtime].resources.requests.cpu"]
    assert differences({"value": "1Gi"}, {"value": "1024Mi"}) == [".value"]


def test_types_must_match() -> None:
    assert differences({"enabled": True}, {"enabled": 1}) == [".enabled"]
    assert differences({"maxSurge": 0}, {"maxSurge": "0"}) == [".maxSurge"]


def test_owner_references_compare_by_uid() -> None:
    live = _live()
    live["metadata"]["ownerReferences"].insert(0, {"uid": "other", "controller": False})
    assert differences(DESIRED, live) == []
    live["metadata"]["ownerReferences"] = [{"uid": "other"}]
    assert differences(DESIRED, live) == [".metadata.ownerReferences[uid=u1]"]


def test_spec_hash_is_stable_and_annotated() -> None:
    annotated = with_spec_hash(DESIRED)["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert annotated == with_spec_hash(copy.deepcopy(DESIRED))["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    scaled = copy.deepcopy(DESIRED)
    scaled["spec"]["replicas"] = 2
    assert with_spec_hash(scaled)["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == annotated, "scaling is no change"
    changed = copy.deepcopy(DESIRED)
    changed["spec"]["template"]["spec"]["volumes"] = []
    assert with_spec_hash(changed)["metadata"]["annotations"][SPEC_HASH_ANNOTATION] != annotated
    assert spec_hash(changed) != spec_hash(DESIRED)
    assert "annotations" not in DESIRED["metadata"], "the input is not modified"
