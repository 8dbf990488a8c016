"""The runtime's Deployment, built from a resolved spec: a pure function, no API calls.

Pods run under the `restricted` Pod Security Standard: non-root (the runtime
image's user 10001), no privilege escalation, no capabilities, the
RuntimeDefault seccomp profile and a read-only root filesystem, with emptyDirs
for the caches (/cache: HF_HOME, TORCH_HOME, ... in the image) and /tmp (HOME).
Weights from a claim (spec.model.persistentVolumeClaim, or the model cache's
directory in its claim) are mounted read-only at /models.
"""

from __future__ import annotations

import math
from typing import Any

from ..cost import EmulationError, builtin_plan, call_seconds
from ..modelcache.layout import cache_directory, claim_name
from ..resolve import Resolved
from .disruption import topology_spread_constraints
from .labels import (
    RUNTIME_METRICS_PORT,
    RUNTIME_METRICS_PORT_NAME,
    RUNTIME_PORT,
    RUNTIME_PORT_NAME,
    Owner,
    child_metadata,
    prometheus_annotations,
    runtime_labels,
    selector_labels,
)

CONTAINER = "runtime"
RUNTIME_UID = 10001
CACHE_DIR = "/cache"
MODEL_DIR = "/models"
# The preStop hook sleeps this long before SIGTERM: the endpoints controller and every kube-proxy
# (or gateway) drop the terminating pod meanwhile, so no request arrives after the drain began.
PRESTOP_SLEEP_SECONDS = 10
# Grace period = preStop + DRAIN_SAFETY x the time to drain a full queue (below), within these bounds:
# the floor covers an estimate that is off; the cap keeps node drains and rollouts finite (a longer
# drain than an hour is better served by a smaller queueSize).
GRACE_FLOOR_SECONDS = 180
GRACE_CAP_SECONDS = 3600
DRAIN_SAFETY = 1.5
# /cache holds the model's files when the pod downloads them (no claim): at most 4 bytes a
# parameter (fp32), plus this much for the other caches (compiled kernels, small Hub files); a pod
# that writes past its sizeLimit is evicted, so /cache cannot fill the node's disk.
CACHE_HEADROOM_GIB = 2
# A repo id the catalog does not know: its size is not known either.
UNKNOWN_MODEL_CACHE_GIB = 100
# Downloading weights before the server answers /healthz can take minutes.
STARTUP_PROBE_PERIOD_SECONDS = 10
STARTUP_PROBE_FAILURES = 90


def runtime_env(resolved: Resolved) -> list[dict[str, str]]:
    """The runtime's settings (its IMAGEFLEET_* environment variables)."""
    spec = resolved.spec
    assert resolved.gpu_class is not None
    batching, generation = resolved.batching, resolved.generation
    # Weights from a claim (the user's or the model cache): the runtime loads them offline.
    source = spec.model.persistent_volume_claim or spec.model.cache
    values: dict[str, str | int | float] = {
        "MODEL": spec.model.name,
        **({"MODEL_REVISION": spec.model.revision} if spec.model.revision else {}),
        **({"MODEL_PATH": MODEL_DIR} if source else {}),
        "OFFLINE": "true" if source else "false",
        "PRECISION": resolved.precision,
        "DEVICE": resolved.gpu_class.device,
        "MAX_BATCH_SIZE": batching.max_batch_size,
        "QUEUE_SIZE": batching.queue_size,
        "DEFAULT_STEPS": generation.default_steps,
        "MAX_STEPS": generation.max_steps,
        "DEFAULT_GUIDANCE_SCALE": generation.default_guidance_scale,
        "DEFAULT_WIDTH": generation.default_width,
        "DEFAULT_HEIGHT": generation.default_height,
        "MAX_WIDTH": generation.max_width,
        "MAX_HEIGHT": generation.max_height,
        "HOST": "0.0.0.0",
        "PORT": RUNTIME_PORT,
        "METRICS_PORT": RUNTIME_METRICS_PORT,
    }
    # Only the options that are on: a resource without spec.speed keeps the pod template it had.
    speed = spec.speed
    if speed is not None:
        values.update({name: "true" for name, on in (("CHANNELS_LAST", speed.channels_last),
                                                     ("FUSE_QKV", speed.fuse_qkv), ("TF32", speed.tf32),
                                                     ("COMPILE", speed.compile)) if on})
        if speed.compile_sizes:
            values["COMPILE_SIZES"] = ",".join(speed.compile_sizes)
    return [{"name": f"IMAGEFLEET_{key}", "value": str(value)} for key, value in values.items()]


def container_resources(resolved: Resolved) -> dict[str, dict[str, str]]:
    """The class's requests and limits, plus its GPUs (an extended resource: requests equal limits)."""
    gpu_class = resolved.gpu_class
    assert gpu_class is not None
    requests = dict(gpu_class.resources.get("requests", {}))
    limits = dict(gpu_class.resources.get("limits", {}))
    if gpu_class.gpu_resource:
        requests[gpu_class.gpu_resource] = limits[gpu_class.gpu_resource] = str(gpu_class.gpus_per_replica)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def drain_seconds(resolved: Resolved) -> float | None:
    """Time to run a full queue and the batch in hand after SIGTERM, at the largest batch and size and the
    default steps, from the calibrated cost table; None for a model or class it has no figures for."""
    batching, generation = resolved.batching, resolved.generation
    try:
        plan = builtin_plan(model=resolved.model.name if resolved.model else "", gpu_class=resolved.spec.gpu_class,
                            precision=resolved.precision)
    except EmulationError:
        return None
    batch = call_seconds(plan, width=generation.max_width, height=generation.max_height,
                         steps=generation.default_steps, images=batching.max_batch_size)
    batches = -(-batching.queue_size // batching.max_batch_size) + 1
    return batches * batch


def termination_grace_seconds(resolved: Resolved) -> int:
    """preStop + DRAIN_SAFETY x drain_seconds, between GRACE_FLOOR_SECONDS and GRACE_CAP_SECONDS."""
    drain = drain_seconds(resolved)
    if drain is None:
        return GRACE_FLOOR_SECONDS
    wanted = PRESTOP_SLEEP_SECONDS + math.ceil(DRAIN_SAFETY * drain)
    return max(GRACE_FLOOR_SECONDS, min(GRACE_CAP_SECONDS, wanted))


def _http_probe(path: str, period: int, failures: int, timeout: int = 1) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": RUNTIME_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def cache_size_limit(resolved: Resolved) -> str:
    """The /cache emptyDir's sizeLimit: the model's weights when the pod downloads them, plus headroom."""
    model = resolved.spec.model
    if model.persistent_volume_claim or model.cache:
        return f"{CACHE_HEADROOM_GIB}Gi"
    if resolved.model is None:
        return f"{UNKNOWN_MODEL_CACHE_GIB}Gi"
    return f"{math.ceil(resolved.model.parameters_billions * 4e9 / 2**30) + CACHE_HEADROOM_GIB}Gi"


def _volumes(owner: Owner, resolved: Resolved) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "cache", "emptyDir": {"sizeLimit": cache_size_limit(resolved)}},
                                     {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    model = resolved.spec.model
    source = model.persistent_volume_claim
    if source:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True}})
        mount = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
        if source.sub_path:
            mount["subPath"] = source.sub_path
        mounts.append(mount)
    if model.cache:
        claim = {"claimName": claim_name(owner.name), "readOnly": True}
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
        mounts.append({"name": "model", "mountPath": MODEL_DIR, "readOnly": True,
                       "subPath": cache_directory(model.name, resolved.precision, model.revision)})
    return volumes, mounts


def build_deployment(owner: Owner, resolved: Resolved, replicas: int, image: str) -> dict[str, Any]:
    """The Deployment of `replicas` runtime pods for `resolved` on its GPU class."""
    spec, gpu_class = resolved.spec, resolved.gpu_class
    assert gpu_class is not None
    labels = runtime_labels(owner.name, spec.tier)
    volumes, mounts = _volumes(owner, resolved)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "ports": [{"name": RUNTIME_PORT_NAME, "containerPort": RUNTIME_PORT, "protocol": "TCP"},
                  {"name": RUNTIME_METRICS_PORT_NAME, "containerPort": RUNTIME_METRICS_PORT, "protocol": "TCP"}],
        "env": runtime_env(resolved),
        "resources": container_resources(resolved),
        "startupProbe": _http_probe("/healthz", STARTUP_PROBE_PERIOD_SECONDS, STARTUP_PROBE_FAILURES),
        "livenessProbe": _http_probe("/healthz", 10, 3, timeout=5),
        "readinessProbe": _http_probe("/readyz", 5, 2),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # Service links would inject IMAGEFLEET_* variables for a Service named "imagefleet".
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(resolved),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if gpu_class.node_selector:
        pod_spec["nodeSelector"] = dict(gpu_class.node_selector)
    if gpu_class.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in gpu_class.tolerations]
    if spec.topology_spread:
        pod_spec["topologySpreadConstraints"] = topology_spread_constraints(owner.name, spec.topology_spread)
    rollout = spec.rollout
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(owner, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": prometheus_annotations()},
                "spec": pod_spec,
            },
        },
    }
