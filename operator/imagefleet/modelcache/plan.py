"""Plan the model cache of one resource: the claim and Job manifests and the ModelCached condition,
from the live claim, the resource's download Jobs and what the Secret check found. Pure: no I/O.

Order: the claim, then the Job (only once the token's Secret key is known to exist), then,
once the Job succeeded, ModelCached=True for the current generation, which is what lets the
main reconcile create the Deployment (`awaiting_cache`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import conditions as c
from ..builders.labels import MANAGED_BY, MANAGED_BY_LABEL, Owner, owner_reference
from ..catalog import GPUClass, Precision
from ..crd.models import ImageModelDeploymentSpec, ModelCacheSpec
from .layout import CACHE_LABEL, cache_directory, claim_name, job_name, variant_for

MODEL_CACHED = "ModelCached"
# Reasons of ModelCached.
PENDING = "Pending"
DOWNLOADING = "Downloading"
DOWNLOAD_FAILED = "DownloadFailed"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_MISSING = "SecretKeyMissing"
CLAIM_MISMATCH = "ClaimMismatch"
CACHED = "Cached"
# Ready/Progressing reason of a resource whose Deployment waits for its cache.
AWAITING_MODEL_CACHE = "AwaitingModelCache"
# Event reason when the download Job is created.
DOWNLOAD_STARTED = "DownloadStarted"
WARNING_REASONS = frozenset({DOWNLOAD_FAILED, SECRET_NOT_FOUND, SECRET_KEY_MISSING, CLAIM_MISMATCH})

# The Job controller retries a failed download pod this many times, with its exponential backoff
# (10 s, 20 s, 40 s, ... capped at 6 min), before the Job fails for good.
BACKOFF_LIMIT = 4
MOUNT = "/model-cache"
DOWNLOAD_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
RUNTIME_UID = 10001

SecretCheck = Literal["Found", "NotFound", "KeyMissing"]
Verdict = tuple[str, str, str]  # status, reason, message


@dataclass(frozen=True)
class CacheObserved:
    """What the plan reads: the live claim (None: absent), this resource's download Jobs, the last
    failed download pod's termination message, and the token Secret check (None: not looked up)."""

    claim: Mapping[str, Any] | None
    jobs: Sequence[Mapping[str, Any]]
    failure: str | None = None
    secret: SecretCheck | None = None


@dataclass(frozen=True)
class CachePlan:
    claim: dict[str, Any] | None  # to create
    job: dict[str, Any] | None  # to create
    delete_jobs: tuple[tuple[str, str], ...]  # (name, uid) of Jobs for an older directory
    verdict: Verdict


def labels(owner: str) -> dict[str, str]:
    """The claim's, the Job's and its pods' labels: never the runtime's selector labels."""
    return {
        "app.kubernetes.io/name": "imagefleet-model-cache",
        "app.kubernetes.io/instance": owner,
        "app.kubernetes.io/component": "model-cache",
        MANAGED_BY_LABEL: MANAGED_BY,
        CACHE_LABEL: owner,
    }


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": labels(owner.name),
            "ownerReferences": [owner_reference(owner)]}


def build_claim(owner: Owner, cache: ModelCacheSpec) -> dict[str, Any]:
    """The cache's PersistentVolumeClaim (owned: deleting the resource deletes the cache)."""
    spec: dict[str, Any] = {"accessModes": list(cache.access_modes),
                            "resources": {"requests": {"storage": cache.size}}}
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _metadata(owner, claim_name(owner.name)), "spec": spec}


def build_job(owner: Owner, spec: ImageModelDeploymentSpec, precision: Precision, gpu_class: GPUClass | None,
              image: str) -> dict[str, Any]:
    """The download Job: `imagefleet-runtime download` into the claim, the token (if any) as HF_TOKEN
    through a secretKeyRef, on the GPU class's nodes (a zonal volume is then made in their zone)."""
    cache = spec.model.cache
    assert cache is not None
    directory = cache_directory(spec.model.name, precision, spec.model.revision)
    args = ["download", "--model", spec.model.name, "--target", f"{MOUNT}/{directory}"]
    variant = variant_for(precision)
    if variant:
        args += ["--variant", variant]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    if cache.token_secret_ref:
        ref = cache.token_secret_ref
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    container = {
        "name": "download",
        "image": image,
        "args": args,
        "env": env,
        "resources": DOWNLOAD_RESOURCES,
        # The command's last line says why it failed: the pod's termination message, shown in ModelCached.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True},
        "volumeMounts": [{"name": "cache", "mountPath": MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                            "fsGroup": RUNTIME_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": claim_name(owner.name)}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    if gpu_class is not None and gpu_class.node_selector:
        pod_spec["nodeSelector"] = dict(gpu_class.node_selector)
    if gpu_class is not None and gpu_class.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in gpu_class.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, job_name(owner.name, directory)),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "template": {"metadata": {"labels": labels(owner.name)}, "spec": pod_spec},
        },
    }


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _claim_mismatch(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """What of the live claim differs from the spec in a field Kubernetes does not let change."""
    live_spec, wanted_spec = live.get("spec") or {}, wanted["spec"]
    problems = []
    if sorted(live_spec.get("accessModes") or ()) != sorted(wanted_spec["accessModes"]):
        problems.append(f"accessModes {live_spec.get('accessModes')} (spec: {wanted_spec['accessModes']})")
    wanted_class = wanted_spec.get("storageClassName")
    if wanted_class and live_spec.get("storageClassName") != wanted_class:
        problems.append(f"storageClassName {live_spec.get('storageClassName')!r} (spec: {wanted_class!r})")
    return ", ".join(problems) or None


def plan_cache(owner: Owner, spec: ImageModelDeploymentSpec, precision: Precision, gpu_class: GPUClass | None,
               image: str, observed: CacheObserved) -> CachePlan:
    """What to create and delete, and ModelCached, for a resource with spec.model.cache set."""
    cache = spec.model.cache
    assert cache is not None
    claim = build_claim(owner, cache)
    directory = cache_directory(spec.model.name, precision, spec.model.revision)
    name = job_name(owner.name, directory)
    where = f"PersistentVolumeClaim {claim_name(owner.name)}, directory {directory}"
    current = next((job for job in observed.jobs if job["metadata"]["name"] == name), None)
    stale = tuple((job["metadata"]["name"], job["metadata"]["uid"]) for job in observed.jobs
                  if job["metadata"]["name"] != name and not job["metadata"].get("deletionTimestamp"))
    if observed.claim is not None:
        mismatch = _claim_mismatch(observed.claim, claim)
        if mismatch:
            message = (f"PersistentVolumeClaim {claim_name(owner.name)} has {mismatch}, which cannot change: "
                       "set spec.model.cache back, or delete the claim (and its cached files) to have it made anew")
            return CachePlan(None, None, stale, (c.FALSE, CLAIM_MISMATCH, message))
    new_claim = claim if observed.claim is None else None
    if current is not None and new_claim is not None:
        # The claim was deleted under a finished or running Job: its files went with it. Download again.
        message = f"PersistentVolumeClaim {claim_name(owner.name)} was deleted: recreating it and downloading again"
        gone = ((name, current["metadata"]["uid"]),)
        return CachePlan(new_claim, None, stale + gone, (c.FALSE, PENDING, message))
    if current is not None:
        return CachePlan(new_claim, None, stale, _job_verdict(current, observed.failure, spec.model.name, where))
    ref = cache.token_secret_ref
    if ref is not None and observed.secret != "Found":
        if observed.secret == "NotFound":
            message = (f"Secret {ref.name} (spec.model.cache.tokenSecretRef) not found in namespace "
                       f"{owner.namespace}: create it; no download Job runs until it exists")
            return CachePlan(new_claim, None, stale, (c.FALSE, SECRET_NOT_FOUND, message))
        if observed.secret == "KeyMissing":
            message = (f"Secret {ref.name} has no key {ref.key!r} (spec.model.cache.tokenSecretRef.key): add it; "
                       "no download Job runs until it exists")
            return CachePlan(new_claim, None, stale, (c.FALSE, SECRET_KEY_MISSING, message))
        return CachePlan(new_claim, None, stale, (c.FALSE, PENDING, f"checking Secret {ref.name}"))
    job = build_job(owner, spec, precision, gpu_class, image)
    message = f"created Job {name} to download {spec.model.name} into {where}"
    return CachePlan(new_claim, job, stale, (c.FALSE, PENDING, message))


def secret_to_check(owner: Owner, spec: ImageModelDeploymentSpec, precision: Precision,
                    jobs: Sequence[Mapping[str, Any]]) -> str | None:
    """The token Secret to look up before planning: only while the Job that would read it is still to be made."""
    cache = spec.model.cache
    if cache is None or cache.token_secret_ref is None:
        return None
    name = job_name(owner.name, cache_directory(spec.model.name, precision, spec.model.revision))
    if any(job["metadata"]["name"] == name for job in jobs):
        return None
    return cache.token_secret_ref.name


def _job_verdict(job: Mapping[str, Any], failure: str | None, model: str, where: str) -> Verdict:
    name = job["metadata"]["name"]
    status = job.get("status") or {}
    failed = int(status.get("failed") or 0)
    last = f"; the last: {failure}" if failure else ""
    if _job_condition(job, "Complete") or int(status.get("succeeded") or 0) > 0:
        return (c.TRUE, CACHED, f"{model} is cached in {where} (Job {name})")
    gave_up = _job_condition(job, "Failed")
    if gave_up is not None:
        cause = failure or gave_up.get("message") or gave_up.get("reason") or "failed"
        return (c.FALSE, DOWNLOAD_FAILED,
                f"Job {name} failed {failed} time{'' if failed == 1 else 's'} and gave up: {cause}. "
                f"Fix the cause, then delete the Job to download again")
    if int(status.get("active") or 0) > 0:
        tries = f" (try {failed + 1} of {BACKOFF_LIMIT + 1}{last})" if failed else ""
        return (c.FALSE, DOWNLOADING, f"Job {name} is downloading {model} into {where}{tries}")
    if failed:
        return (c.FALSE, DOWNLOADING,
                f"Job {name}: {failed} of {BACKOFF_LIMIT + 1} tries failed{last}; retrying with backoff")
    return (c.FALSE, PENDING, f"Job {name} waits for its pod to start")


def condition(verdict: Verdict, current: Mapping[str, Any], generation: int | None,
              timestamp: str | None = None) -> dict[str, Any]:
    status, reason, message = verdict
    return c.make(MODEL_CACHED, status, reason, message, generation=generation,
                  previous=c.find(current.get("conditions"), MODEL_CACHED), timestamp=timestamp)


def awaiting_cache(imd: Mapping[str, Any], spec: ImageModelDeploymentSpec) -> str | None:
    """Why the runtime Deployment must wait (None: no cache asked for, or it is complete for this generation)."""
    if spec.model.cache is None:
        return None
    cached = c.find((imd.get("status") or {}).get("conditions"), MODEL_CACHED)
    generation = imd["metadata"].get("generation")
    if cached is not None and cached.get("status") == c.TRUE and cached.get("observedGeneration") == generation:
        return None
    return "waiting for the model cache to be filled (see the ModelCached condition)"
