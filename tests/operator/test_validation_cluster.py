"""The API server itself rejects invalid ImageModelDeployments, naming the field (schema and CEL rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from tests.conftest import Cluster

from .harness import Imds

VALID: dict[str, Any] = {"model": {"name": "sd15"}, "gpuClass": "t4-16gb", "precision": "fp16"}


def _with(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(VALID))
    for path, value in changes.items():
        target = spec
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return spec


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # id, spec, a field the message must name, a further word it must contain
    ("missing-model", _with(model=None), "spec.model", "Required"),
    ("missing-gpu-class", _with(gpuClass=None), "spec.gpuClass", "Required"),
    ("missing-model-name", _with(model={"family": "sdxl"}), "spec.model.name", "Required"),
    ("precision-fp8", _with(precision="fp8"), "spec.precision", '"fp16", "bf16", "fp32"'),
    ("tier-gold", _with(tier="gold"), "spec.tier", '"bulk", "standard", "premium"'),
    ("model-name-garbage", _with(model__name="not a model!"), "spec.model.name", "Hugging Face repo id"),
    ("family-on-catalog-model", _with(model__family="sdxl"), "spec.model.family", "repo ids"),
    ("family-unknown", _with(model={"name": "org/x", "family": "dalle"}), "spec.model.family", "sd15"),
    ("gpu-class-uppercase", _with(gpuClass="GPU_Big"), "spec.gpuClass", "should match"),
    ("replicas-negative", _with(replicas=-1), "spec.replicas", "greater than or equal to 0"),
    ("replicas-too-many", _with(replicas=1000), "spec.replicas", "less than or equal to 100"),
    ("min-above-max", _with(autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2}),
     "spec.autoscaling.minReplicas", "maxReplicas"),
    ("premium-min-zero", _with(tier="premium", autoscaling={"minReplicas": 0}),
     "spec.autoscaling.minReplicas", "premium"),
    ("p95-zero", _with(autoscaling={"targetP95Seconds": 0}), "spec.autoscaling.targetP95Seconds", "greater than 0"),
    ("batch-zero", _with(batching={"maxBatchSize": 0}), "spec.batching.maxBatchSize", "greater than or equal to 1"),
    ("batch-huge", _with(batching={"maxBatchSize": 1000}), "spec.batching.maxBatchSize", "less than or equal to 64"),
    ("queue-below-batch", _with(batching={"maxBatchSize": 8, "queueSize": 4}), "spec.batching.queueSize",
     "maxBatchSize"),
    ("width-not-multiple-of-8", _with(generation={"defaultWidth": 513}), "spec.generation.defaultWidth",
     "multiple of 8"),
    ("height-too-large", _with(generation={"maxHeight": 8192}), "spec.generation.maxHeight",
     "less than or equal to 4096"),
    ("default-above-max-width", _with(generation={"defaultWidth": 1024, "maxWidth": 512}),
     "spec.generation.defaultWidth", "maxWidth"),
    ("default-above-max-steps", _with(generation={"defaultSteps": 50, "maxSteps": 20}),
     "spec.generation.defaultSteps", "maxSteps"),
    ("guidance-negative", _with(generation={"defaultGuidanceScale": -1}), "spec.generation.defaultGuidanceScale",
     "greater than or equal to 0"),
    ("rollout-both-zero", _with(rollout={"maxSurge": 0, "maxUnavailable": 0}), "spec.rollout.maxUnavailable",
     "cannot both be 0"),
    ("rollout-bad-percentage", _with(rollout={"maxSurge": "lots"}), "spec.rollout.maxSurge", "percentage"),
    ("disruption-empty", _with(disruption={}), "spec.disruption.maxUnavailable", "exactly one"),
    ("disruption-both", _with(disruption={"maxUnavailable": 1, "minAvailable": 1}), "spec.disruption.maxUnavailable",
     "exactly one"),
    ("disruption-bad-percentage", _with(disruption={"minAvailable": "most"}), "spec.disruption.minAvailable",
     "percentage"),
    ("spread-no-key", _with(topologySpread=[{"maxSkew": 1}]), "spec.topologySpread[0].topologyKey", "Required"),
    ("spread-same-key-twice", _with(topologySpread=[{"topologyKey": "kubernetes.io/hostname"},
                                                    {"topologyKey": "kubernetes.io/hostname"}]),
     "spec.topologySpread[1]", "Duplicate"),
    ("spread-skew-zero", _with(topologySpread=[{"topologyKey": "kubernetes.io/hostname", "maxSkew": 0}]),
     "spec.topologySpread[0].maxSkew", "greater than or equal to 1"),
    ("claim-name-missing", _with(model={"name": "org/x", "persistentVolumeClaim": {"subPath": "a"}}),
     "spec.model.persistentVolumeClaim.claimName", "Required"),
    ("claim-sub-path-escapes", _with(model={"name": "org/x", "persistentVolumeClaim": {"claimName": "w",
                                                                                        "subPath": "../etc"}}),
     "spec.model.persistentVolumeClaim.subPath", "relative path"),
    ("cache-size-garbage", _with(model={"name": "sd15", "cache": {"size": "lots"}}), "spec.model.cache.size",
     "should match"),
    ("cache-access-mode-read-only", _with(model={"name": "sd15", "cache": {"size": "8Gi",
                                                                        "accessModes": ["ReadOnlyMany"]}}),
     "spec.model.cache.accessModes", "ReadWriteMany"),
    ("cache-and-claim", _with(model={"name": "org/x", "cache": {"size": "8Gi"},
                                     "persistentVolumeClaim": {"claimName": "w"}}),
     "spec.model.cache", "set one"),
    ("cache-of-tiny", _with(model={"name": "tiny", "cache": {"size": "1Gi"}}), "spec.model.cache", "built in"),
    ("revision-of-tiny", _with(model={"name": "tiny", "revision": "main"}), "spec.model.revision", "built in"),
    ("revision-of-a-claim", _with(model={"name": "org/model", "revision": "main",
                                         "persistentVolumeClaim": {"claimName": "weights"}}),
     "spec.model.revision", "a claim holds"),
    ("cache-secret-without-key", _with(model={"name": "sd15", "cache": {"size": "8Gi",
                                                                     "tokenSecretRef": {"name": "hf"}}}),
     "spec.model.cache.tokenSecretRef.key", "Required"),
    ("cache-rwo-two-replicas", _with(model={"name": "sd15", "cache": {"size": "8Gi"}}, replicas=2),
     "spec.model.cache.accessModes", "one replica"),
    ("cache-rwo-autoscaling-unbounded", _with(model={"name": "sd15", "cache": {"size": "8Gi"}},
                                              autoscaling={"enabled": True}),
     "spec.model.cache.accessModes", "maxReplicas set to 1"),
    ("cache-rwop-surge", _with(model={"name": "sd15", "cache": {"size": "8Gi", "accessModes": ["ReadWriteOncePod"]}},
                               rollout={"maxSurge": 1, "maxUnavailable": 0}),
     "spec.rollout.maxSurge", "ReadWriteOnce"),
    ("speed-tf32-at-fp16", _with(speed={"tf32": True}), "spec.speed.tf32", "spec.precision fp32"),
    ("speed-sizes-without-compile", _with(speed={"compileSizes": ["512x512"]}), "spec.speed.compileSizes",
     "compile: true"),
    ("speed-size-garbage", _with(speed={"compile": True, "compileSizes": ["512"]}), "spec.speed.compileSizes[0]",
     "should match"),
]


@pytest.mark.parametrize(("case", "spec", "field", "hint"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_resource_is_rejected_naming_the_field(
    cluster: Cluster, imd_crd: None, namespace: str, case: str, spec: dict[str, Any], field: str, hint: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        Imds(cluster.api_client, namespace).create(case, spec)
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body)["message"]
    assert field in message, message
    assert hint in message, message


def test_name_that_cannot_name_a_service_is_rejected(cluster: Cluster, imd_crd: None, namespace: str) -> None:
    with pytest.raises(ApiException) as rejected:
        Imds(cluster.api_client, namespace).create("9lives", VALID)
    message = json.loads(rejected.value.body)["message"]
    assert rejected.value.status == 422 and "metadata.name" in message and "DNS-1035" in message


def test_valid_resource_gets_the_schema_defaults_only(cluster: Cluster, imd_crd: None, namespace: str) -> None:
    created = Imds(cluster.api_client, namespace).create("defaults", VALID)
    spec = created["spec"]
    assert spec["tier"] == "standard" and spec["replicas"] == 1
    assert spec["rollout"] == {"maxSurge": 0, "maxUnavailable": 1} and spec["autoscaling"] == {"enabled": False}
    assert "batching" not in spec and "generation" not in spec, "tier and model defaults stay out of the spec"


def test_a_spec_with_the_deprecated_batching_delay_still_applies_strictly(
    cluster: Cluster, imd_crd: None, namespace: str
) -> None:
    """Manifests written before continuous batching keep applying under kubectl's strict field validation."""
    imds = Imds(cluster.api_client, namespace)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": "old-delay"},
            "spec": _with(batching={"maxBatchSize": 8, "maxDelayMilliseconds": 500})}
    created = imds.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                       field_validation="Strict")
    assert created["spec"]["batching"] == {"maxBatchSize": 8, "maxDelayMilliseconds": 500}


def test_a_shared_cache_may_serve_several_replicas(cluster: Cluster, imd_crd: None, namespace: str) -> None:
    spec = _with(model={"name": "sd15", "cache": {"size": "8Gi", "accessModes": ["ReadWriteMany"]}},
                 autoscaling={"enabled": True, "maxReplicas": 4})
    created = Imds(cluster.api_client, namespace).create("shared-cache", spec)
    assert created["spec"]["model"]["cache"]["accessModes"] == ["ReadWriteMany"]


def test_scaling_a_single_node_cache_past_one_replica_is_refused(
    cluster: Cluster, imd_crd: None, namespace: str
) -> None:
    """`kubectl scale` goes through the scale subresource: the same CEL rule refuses it."""
    Imds(cluster.api_client, namespace).create("single", _with(model={"name": "sd15", "cache": {"size": "8Gi"}}))
    with pytest.raises(ApiException) as rejected:
        client.CustomObjectsApi(cluster.api_client).patch_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, PLURAL, "single", {"spec": {"replicas": 2}})
    assert rejected.value.status == 422 and "one replica" in json.loads(rejected.value.body)["message"]


def test_tf32_with_the_precision_left_out_is_the_operators_to_judge(
    cluster: Cluster, imd_crd: None, namespace: str
) -> None:
    """The catalog fills the precision in, so the API server accepts it (the FitsGPU condition judges)."""
    created = Imds(cluster.api_client, namespace).create("tf32", _with(precision=None, speed={"tf32": True}))
    assert created["spec"]["speed"] == {"tf32": True, "channelsLast": False, "fuseQKV": False, "compile": False}
