"""The model cache's pure planning: the claim and Job manifests, ModelCached from the Job/claim/Secret
state, and the gate that keeps the runtime Deployment back until the cache is complete. No cluster."""

from __future__ import annotations

from typing import Any

from imagefleet import conditions as c
from imagefleet.builders.labels import Owner
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.modelcache import plan as mc
from imagefleet.modelcache.layout import cache_directory, claim_name, job_name
from imagefleet.reconcile import Config, Observed, plan

CLASSES = load_gpu_classes()
CONFIG = Config(gpu_classes=CLASSES, runtime_image="runtime:test")
OWNER = Owner(name="sdxl", namespace="ns", uid="uid-1")
CACHE = {"size": "20Gi", "storageClassName": "fast", "tokenSecretRef": {"name": "hf", "key": "token"}}
SPEC = {"model": {"name": "sdxl", "cache": CACHE}, "gpuClass": "l4-24gb", "precision": "fp16"}
DIRECTORY = cache_directory("sdxl", "fp16", None)
JOB = job_name("sdxl", DIRECTORY)


def _spec(**changes: Any) -> ImageModelDeploymentSpec:
    return ImageModelDeploymentSpec.model_validate({**SPEC, **changes})


def _plan(observed: mc.CacheObserved, spec: ImageModelDeploymentSpec | None = None) -> mc.CachePlan:
    spec = spec or _spec()
    return mc.plan_cache(OWNER, spec, "fp16", CLASSES["l4-24gb"], "runtime:test", observed)


def _job(**status: Any) -> dict[str, Any]:
    return {"kind": "Job", "metadata": {"name": JOB, "uid": "job-uid"}, "status": status}


def test_a_pinned_revision_is_downloaded_into_a_directory_of_its_own() -> None:
    spec = _spec(model={**SPEC["model"], "revision": "v1.0"})
    plan = _plan(mc.CacheObserved(None, [], secret="Found"), spec)
    assert plan.job is not None
    directory = cache_directory("sdxl", "fp16", "v1.0")
    assert directory != DIRECTORY  # a new revision never overwrites the one pods read
    assert plan.job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "download", "--model", "sdxl", "--target", f"/model-cache/{directory}", "--variant", "fp16",
        "--revision", "v1.0"]


def test_first_plan_checks_the_secret_then_creates_claim_and_job() -> None:
    assert mc.secret_to_check(OWNER, _spec(), "fp16", []) == "hf"
    first = _plan(mc.CacheObserved(None, [], secret="Found"))
    assert first.claim is not None and first.claim["metadata"]["name"] == claim_name("sdxl")
    assert first.claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
                                   "storageClassName": "fast"}
    job = first.job
    assert job is not None and job["metadata"]["name"] == JOB and len(JOB) <= 63
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["download", "--model", "sdxl", "--target", f"/model-cache/{DIRECTORY}",
                                 "--variant", "fp16"]
    token = [env for env in container["env"] if env["name"] == "HF_TOKEN"]
    assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert pod["nodeSelector"] == CLASSES["l4-24gb"].node_selector
    assert "nvidia.com/gpu" not in str(container["resources"])  # the download needs no GPU
    assert job["spec"]["backoffLimit"] == mc.BACKOFF_LIMIT
    assert "imagefleet.io/name" not in job["spec"]["template"]["metadata"]["labels"]  # not a runtime pod
    assert first.verdict[:2] == (c.FALSE, mc.PENDING)
    # Once the Job exists the Secret is not looked up again.
    assert mc.secret_to_check(OWNER, _spec(), "fp16", [_job()]) is None


def test_missing_secret_or_key_creates_no_job_and_names_it() -> None:
    missing = _plan(mc.CacheObserved(None, [], secret="NotFound"))
    assert missing.job is None and missing.verdict[:2] == (c.FALSE, mc.SECRET_NOT_FOUND)
    assert "Secret hf" in missing.verdict[2] and "tokenSecretRef" in missing.verdict[2]
    key = _plan(mc.CacheObserved(None, [], secret="KeyMissing"))
    assert key.job is None and key.verdict[:2] == (c.FALSE, mc.SECRET_KEY_MISSING) and "'token'" in key.verdict[2]


def test_job_states_give_the_modelcached_verdict() -> None:
    claim = {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast"}}
    verdict = lambda job: _plan(mc.CacheObserved(claim, [job], failure="downloading sdxl failed: 401")).verdict  # noqa: E731
    assert verdict(_job(active=1))[:2] == (c.FALSE, mc.DOWNLOADING)
    retrying = verdict(_job(failed=2))
    assert retrying[:2] == (c.FALSE, mc.DOWNLOADING) and "2 of 5 tries failed" in retrying[2] and "401" in retrying[2]
    gave_up = verdict(_job(failed=5, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]))
    assert gave_up[:2] == (c.FALSE, mc.DOWNLOAD_FAILED) and "401" in gave_up[2] and "delete the Job" in gave_up[2]
    done = verdict(_job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]))
    assert done[:2] == (c.TRUE, mc.CACHED) and DIRECTORY in done[2]
    assert _plan(mc.CacheObserved(claim, [_job(succeeded=1)])).claim is None  # the claim is there


def test_a_changed_model_gets_a_new_job_and_the_old_one_goes() -> None:
    old = {"kind": "Job", "metadata": {"name": job_name("sdxl", cache_directory("sdxl", "fp32", None)), "uid": "old"},
           "status": {"succeeded": 1}}
    live = {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast"}}
    planned = _plan(mc.CacheObserved(live, [old], secret="Found"))
    assert planned.job is not None and planned.delete_jobs == ((old["metadata"]["name"], "old"),)


def test_a_claim_that_cannot_change_is_reported() -> None:
    live = {"spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "slow"}}
    planned = _plan(mc.CacheObserved(live, [], secret="Found"))
    assert planned.job is None and planned.verdict[:2] == (c.FALSE, mc.CLAIM_MISMATCH)
    assert "accessModes" in planned.verdict[2] and "storageClassName" in planned.verdict[2]


def _imd(status: dict[str, Any] | None = None, generation: int = 3) -> dict[str, Any]:
    return {"apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelDeployment",
            "metadata": {"name": "sdxl", "namespace": "ns", "uid": "uid-1", "generation": generation},
            "spec": {**SPEC, "model": {"name": "sdxl", "cache": {"size": "20Gi"}}, "gpuClass": "a100-80gb"},
            **({"status": status} if status else {})}


def _cached(status: str, generation: int) -> dict[str, Any]:
    return {"conditions": [{"type": mc.MODEL_CACHED, "status": status, "reason": "x", "message": "",
                            "lastTransitionTime": "T0", "observedGeneration": generation}]}


def test_no_deployment_until_the_cache_is_complete_for_this_generation() -> None:
    waiting = plan(Observed(_imd(), None, None), CONFIG, timestamp="T0")
    assert waiting.deployment.action == "none" and waiting.service.action == "apply"
    ready = c.find(waiting.status["conditions"], c.READY)  # type: ignore[index]
    assert ready is not None and ready["reason"] == mc.AWAITING_MODEL_CACHE
    assert plan(Observed(_imd(_cached(c.TRUE, 2)), None, None), CONFIG).deployment.action == "none"  # stale
    assert plan(Observed(_imd(_cached(c.FALSE, 3)), None, None), CONFIG).deployment.action == "none"
    go = plan(Observed(_imd(_cached(c.TRUE, 3)), None, None), CONFIG)
    assert go.deployment.action == "apply" and go.deployment.manifest is not None
    pod = go.deployment.manifest["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": claim_name("sdxl"), "readOnly": True}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True, "subPath": DIRECTORY}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["IMAGEFLEET_MODEL_PATH"] == "/models" and env["IMAGEFLEET_OFFLINE"] == "true"


def test_a_deleted_claim_is_made_again_and_the_job_runs_again() -> None:
    planned = _plan(mc.CacheObserved(None, [_job(succeeded=1)], secret="Found"))
    assert planned.claim is not None and planned.job is None and planned.delete_jobs == ((JOB, "job-uid"),)
    assert planned.verdict[:2] == (c.FALSE, mc.PENDING) and "deleted" in planned.verdict[2]
