"""The runtime Deployment and Service manifests (pure builders)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from imagefleet.builders import Owner, build_deployment, build_service, selector_string
from imagefleet.builders.deployment import (
    DRAIN_SAFETY,
    GRACE_CAP_SECONDS,
    GRACE_FLOOR_SECONDS,
    PRESTOP_SLEEP_SECONDS,
    drain_seconds,
)
from imagefleet.catalog import load_gpu_classes, model_catalog
from imagefleet.cost import builtin_plan, call_seconds
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.resolve import resolve

CLASSES = load_gpu_classes()
OWNER = Owner(name="portraits", namespace="team-a", uid="1234-uid")
IMAGE = "registry.example/imagefleet-runtime:test"
RUNTIME_ENV = {
    "IMAGEFLEET_MODEL", "IMAGEFLEET_OFFLINE", "IMAGEFLEET_PRECISION", "IMAGEFLEET_DEVICE",
    "IMAGEFLEET_MAX_BATCH_SIZE", "IMAGEFLEET_QUEUE_SIZE", "IMAGEFLEET_DEFAULT_STEPS",
    "IMAGEFLEET_MAX_STEPS", "IMAGEFLEET_DEFAULT_GUIDANCE_SCALE", "IMAGEFLEET_DEFAULT_WIDTH",
    "IMAGEFLEET_DEFAULT_HEIGHT", "IMAGEFLEET_MAX_WIDTH", "IMAGEFLEET_MAX_HEIGHT", "IMAGEFLEET_HOST", "IMAGEFLEET_PORT",
    "IMAGEFLEET_METRICS_PORT",
}


def _deployment(replicas: int = 2, **spec: Any) -> dict[str, Any]:
    fields = {"model": {"name": "sdxl"}, "gpuClass": "l4-24gb", "tier": "premium", **spec}
    parsed = ImageModelDeploymentSpec.model_validate(fields)
    return build_deployment(OWNER, resolve(parsed, CLASSES), replicas, IMAGE)


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _pod(deployment)["containers"][0]["env"]}


def test_labels_selector_and_owner_reference() -> None:
    deployment = _deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "imagefleet-runtime", "app.kubernetes.io/instance": "portraits",
        "app.kubernetes.io/component": "runtime", "app.kubernetes.io/managed-by": "imagefleet",
        "imagefleet.io/name": "portraits", "imagefleet.io/tier": "premium",
    }
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "imagefleet.io/tier" not in selector and selector.items() <= labels.items()
    assert selector_string("portraits") == ",".join(f"{k}={v}" for k, v in selector.items())
    [owner] = deployment["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelDeployment", "name": "portraits",
                     "uid": "1234-uid", "controller": True, "blockOwnerDeletion": True}
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}


def test_restricted_pod_security() -> None:
    pod = _pod(_deployment())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/cache", "/tmp"} <= mounts
    assert all("emptyDir" in volume for volume in pod["volumes"])
    cache = next(volume for volume in pod["volumes"] if volume["name"] == "cache")
    assert cache["emptyDir"]["sizeLimit"].endswith("Gi")  # a pod cannot fill its node's disk


def test_gpu_request_node_selector_and_toleration_from_the_class() -> None:
    pod = _pod(_deployment())
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cpu_class_requests_no_gpu_and_tolerates_nothing() -> None:
    pod = _pod(_deployment(model={"name": "tiny"}, gpuClass="cpu", precision="fp32"))
    resources = pod["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources.get("requests", {}) and "nvidia.com/gpu" not in resources.get("limits", {})
    assert "tolerations" not in pod and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert _env(_deployment(model={"name": "tiny"}, gpuClass="cpu", precision="fp32"))["IMAGEFLEET_DEVICE"] == "cpu"


def test_probes() -> None:
    container = _pod(_deployment())["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]


def test_runtime_env_is_exactly_the_contract_with_tier_and_model_values() -> None:
    env = _env(_deployment())
    assert set(env) == RUNTIME_ENV
    assert env["IMAGEFLEET_MODEL"] == "sdxl" and env["IMAGEFLEET_PRECISION"] == "fp16"
    assert env["IMAGEFLEET_DEVICE"] == "cuda" and env["IMAGEFLEET_OFFLINE"] == "false"
    assert env["IMAGEFLEET_MAX_BATCH_SIZE"] == "1"  # premium
    assert env["IMAGEFLEET_DEFAULT_WIDTH"] == "1024" and env["IMAGEFLEET_PORT"] == "8000"
    assert env["IMAGEFLEET_METRICS_PORT"] == "9090"
    assert all(isinstance(value, str) for value in env.values())


def test_user_settings_reach_the_runtime() -> None:
    env = _env(_deployment(tier="bulk", batching={"maxBatchSize": 3, "queueSize": 12},
                           generation={"defaultSteps": 12, "maxWidth": 768}))
    assert env["IMAGEFLEET_MAX_BATCH_SIZE"] == "3" and env["IMAGEFLEET_QUEUE_SIZE"] == "12"
    assert env["IMAGEFLEET_DEFAULT_STEPS"] == "12" and env["IMAGEFLEET_MAX_WIDTH"] == "768"


def test_a_pinned_revision_reaches_the_runtime_and_the_cache_mount() -> None:
    env = _env(_deployment(model={"name": "org/model", "family": "sdxl", "revision": "0123abc"}))
    assert env["IMAGEFLEET_MODEL_REVISION"] == "0123abc"
    cached = _pod(_deployment(model={"name": "sdxl", "revision": "v2", "cache": {"size": "20Gi"}}))
    mount = next(m for m in cached["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount["subPath"] == "sdxl@v2-fp16"


def test_the_deprecated_batching_delay_reaches_no_pod() -> None:
    given = _deployment(tier="bulk", batching={"maxBatchSize": 3, "maxDelayMilliseconds": 40})
    assert given == _deployment(tier="bulk", batching={"maxBatchSize": 3})


def test_weights_from_a_claim_run_offline() -> None:
    deployment = _deployment(model={"name": "org/model", "family": "sdxl",
                                    "persistentVolumeClaim": {"claimName": "weights", "subPath": "sdxl"}})
    env = _env(deployment)
    assert env["IMAGEFLEET_MODEL_PATH"] == "/models" and env["IMAGEFLEET_OFFLINE"] == "true"
    volume = next(v for v in _pod(deployment)["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    mount = next(m for m in _pod(deployment)["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True, "subPath": "sdxl"}


def test_rolling_update_needs_no_spare_gpu_by_default_and_is_configurable() -> None:
    assert _deployment()["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    custom = _deployment(rollout={"maxSurge": "25%", "maxUnavailable": 0})
    assert custom["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}


def test_replicas_and_image() -> None:
    deployment = _deployment(replicas=3)
    assert deployment["spec"]["replicas"] == 3 and _pod(deployment)["containers"][0]["image"] == IMAGE


def test_service() -> None:
    service = build_service(OWNER, "bulk")
    assert service["metadata"]["name"] == "portraits" and service["metadata"]["namespace"] == "team-a"
    assert service["spec"]["selector"] == _deployment()["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                                        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert service["metadata"]["labels"]["imagefleet.io/tier"] == "bulk"


def test_grace_period_follows_the_queue_bound_and_the_batch_time() -> None:
    bulk = ImageModelDeploymentSpec.model_validate({"model": {"name": "sdxl"}, "gpuClass": "l4-24gb", "tier": "bulk",
                                                    "batching": {"maxBatchSize": 2}})
    resolved = resolve(bulk, CLASSES)
    drain = drain_seconds(resolved)
    assert drain is not None
    plan = builtin_plan(model="sdxl", gpu_class="l4-24gb", precision="fp16")
    one_batch = call_seconds(plan, width=1024, height=1024, steps=resolved.generation.default_steps, images=2)
    assert drain == pytest.approx((resolved.batching.queue_size // 2 + 1) * one_batch)
    grace = _pod(build_deployment(OWNER, resolved, 1, IMAGE))["terminationGracePeriodSeconds"]
    assert grace == min(GRACE_CAP_SECONDS, PRESTOP_SLEEP_SECONDS + math.ceil(DRAIN_SAFETY * drain))
    assert grace > GRACE_FLOOR_SECONDS  # 256 queued SDXL images on an L4 need far more than the old fixed 180 s
    # A short queue drains within the floor; a model without cost figures gets the floor.
    short = _pod(_deployment(batching={"maxBatchSize": 1, "queueSize": 1}))["terminationGracePeriodSeconds"]
    unknown = _pod(_deployment(model={"name": "someone/custom"}))["terminationGracePeriodSeconds"]
    assert short == unknown == GRACE_FLOOR_SECONDS


def test_grace_period_is_capped() -> None:
    huge = ImageModelDeploymentSpec.model_validate({"model": {"name": "flux1-dev"}, "gpuClass": "l4-24gb",
                                                    "batching": {"maxBatchSize": 1, "queueSize": 10_000}})
    resolved = resolve(huge, CLASSES)
    assert (drain_seconds(resolved) or 0) > GRACE_CAP_SECONDS
    assert _pod(build_deployment(OWNER, resolved, 1, IMAGE))["terminationGracePeriodSeconds"] == GRACE_CAP_SECONDS


def test_prestop_sleeps_before_the_drain() -> None:
    container = _pod(_deployment())["containers"][0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}


def test_the_cache_emptydir_holds_a_download_of_the_model_and_no_more() -> None:
    def limit(**spec: Any) -> str:
        return next(v["emptyDir"]["sizeLimit"] for v in _pod(_deployment(**spec))["volumes"] if v["name"] == "cache")

    parameters = model_catalog()["sdxl"].parameters_billions
    assert limit() == f"{math.ceil(parameters * 4e9 / 2**30) + 2}Gi"  # fp32 at most, and 2 GiB of other caches
    assert limit(model={"name": "sdxl", "persistentVolumeClaim": {"claimName": "weights"}}) == "2Gi"
    assert limit(model={"name": "someone/unknown-model"}) == "100Gi"
