"""The reconciler's bookkeeping: plans from the newest view and writes nothing twice.

The Kubernetes API is replaced by an in-memory recorder here; the cluster tests run the real one.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from imagefleet.catalog import load_gpu_classes
from imagefleet.kube import INITIAL_METRICS_FIELD_MANAGER, Conflict
from imagefleet.reconcile import Config, Reconciler

SPEC = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "replicas": 1}


class RecordingKube:
    """Answers writes like the API server would (bumping resourceVersions) and records them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.version = 100
        self.imd: dict[str, Any] = {}
        # The autoscaler has written MetricsAvailable: the AwaitingMetrics apply conflicts, as the API server answers.
        self.autoscaler_reported = False
        # Objects of the children's names that someone else made (unlabelled: no watch shows them), by kind.
        self.foreign: dict[str, dict[str, Any]] = {}
        self.forced: list[bool] = []  # of each child apply

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {kind}")
        return self.foreign.get(kind)

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"].setdefault("uid", f"{obj['kind']}-uid")
        return obj

    async def apply(self, manifest: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.calls.append(f"apply {manifest['kind']}")
        self.forced.append(force)
        if not force and manifest["kind"] in self.foreign:
            raise Conflict(409, "Apply failed with 1 conflict: conflict with \"kubectl-create\": .spec.selector")
        live = self._bump(manifest)
        live["metadata"]["generation"] = 1
        return live

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(f"delete {kind}")

    async def apply_status(self, namespace: str, name: str, status: dict[str, Any],
                           field_manager: str = "imagefleet-operator", *, force: bool = True) -> dict[str, Any]:
        if field_manager == INITIAL_METRICS_FIELD_MANAGER:
            self.calls.append(f"apply AwaitingMetrics (force={force})")
            if self.autoscaler_reported:
                raise Conflict(409, "conflict with imagefleet-autoscaler")
        else:
            self.calls.append("apply status")
        self.imd = self._bump({**self.imd, "status": {**self.imd.get("status", {}), **status}})
        return self.imd

    async def post_event(self, involved: Any, type_: str, reason: str, message: str, instance: str) -> None:
        self.calls.append(f"event {reason}")


def _imd() -> dict[str, Any]:
    return {"apiVersion": "imagefleet.io/v1alpha1", "kind": "ImageModelDeployment",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "50"},
            "spec": SPEC}


async def _settle() -> None:
    """Let the background Event posts run."""
    for _ in range(3):
        await asyncio.sleep(0)


def _reconciler(kube: RecordingKube) -> Reconciler:
    return Reconciler(kube, Config(load_gpu_classes(), "runtime:test"))  # type: ignore[arg-type]


async def test_first_reconcile_writes_children_status_and_one_event() -> None:
    kube = RecordingKube()
    kube.imd = _imd()
    await _reconciler(kube).reconcile("ns", "a", _imd(), None, None)
    await _settle()
    assert kube.calls == ["apply Deployment", "apply Service", "apply status", "event Created"]


async def test_a_stale_watch_view_does_not_repeat_writes() -> None:
    kube = RecordingKube()
    kube.imd = _imd()
    reconciler = _reconciler(kube)
    await reconciler.reconcile("ns", "a", _imd(), None, None)
    kube.calls.clear()
    # The watch has not delivered the operator's own writes yet: same stale view again.
    assert await reconciler.reconcile("ns", "a", _imd(), None, None) is None
    assert kube.calls == []


async def test_the_awaiting_metrics_apply_is_sent_once_per_generation_even_when_refused() -> None:
    kube = RecordingKube()
    kube.autoscaler_reported = True
    autoscaled = _imd()
    autoscaled["spec"] = {**SPEC, "autoscaling": {"enabled": True}}
    kube.imd = copy.deepcopy(autoscaled)
    reconciler = _reconciler(kube)
    await reconciler.reconcile("ns", "a", autoscaled, None, None)
    assert "apply AwaitingMetrics (force=False)" in kube.calls
    kube.calls.clear()
    # The watch still shows the copy from before the autoscaler's write: no second, refused apply, and
    # with it nothing to write at all.
    assert await reconciler.reconcile("ns", "a", autoscaled, None, None) is None
    assert kube.calls == []
    # A new generation (autoscaling turned off and on again) may say it once more.
    again = copy.deepcopy(autoscaled)
    again["metadata"] |= {"generation": 2, "resourceVersion": "1000"}
    await reconciler.reconcile("ns", "a", again, None, None)
    assert "apply AwaitingMetrics (force=False)" in kube.calls


async def test_the_awaiting_metrics_apply_does_not_wait_behind_the_children() -> None:
    """At scale every write waits for a token: the AwaitingMetrics apply goes out with the first
    child, before any pod can be ready (sent after them, it mostly found the autoscaler's verdict)."""
    kube = RecordingKube()
    autoscaled = _imd()
    autoscaled["spec"] = {**SPEC, "autoscaling": {"enabled": True}}
    kube.imd = copy.deepcopy(autoscaled)
    sent = asyncio.Event()
    answer_status = kube.apply_status
    answer_child = kube.apply

    async def apply_status(namespace: str, name: str, status: dict[str, Any], field_manager: str = "imagefleet-operator",
                           *, force: bool = True) -> dict[str, Any]:
        if field_manager == INITIAL_METRICS_FIELD_MANAGER:
            sent.set()
        return await answer_status(namespace, name, status, field_manager, force=force)

    async def apply(manifest: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        if manifest["kind"] == "Deployment":
            await asyncio.wait_for(sent.wait(), timeout=5)  # the Deployment's token comes after it
        return await answer_child(manifest, force=force)

    kube.apply_status = apply_status  # type: ignore[method-assign]
    kube.apply = apply  # type: ignore[method-assign]
    await _reconciler(kube).reconcile("ns", "a", autoscaled, None, None)
    assert kube.calls[:2] == ["apply Deployment", "apply AwaitingMetrics (force=False)"] or \
        kube.calls[:2] == ["apply AwaitingMetrics (force=False)", "apply Deployment"], kube.calls
    assert kube.calls[2:4] == ["apply Service", "apply status"], kube.calls


async def test_a_deleted_child_is_applied_again_once_the_watch_reports_it() -> None:
    kube = RecordingKube()
    kube.imd = _imd()
    reconciler = _reconciler(kube)
    planned = await reconciler.reconcile("ns", "a", _imd(), None, None)
    assert planned is not None and planned.deployment.manifest is not None
    ready = copy.deepcopy(planned.deployment.manifest)
    ready["metadata"] |= {"uid": "d-uid", "generation": 1, "resourceVersion": "999"}
    ready["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    await reconciler.reconcile("ns", "a", kube.imd, ready, None)  # the watch reports it ready
    await _settle()
    assert kube.calls[-1] == "event Ready"
    kube.calls.clear()
    reconciler.forget("Deployment", "ns", "a")
    await reconciler.reconcile("ns", "a", kube.imd, None, None)
    await _settle()
    assert kube.calls[0] == "apply Deployment" and "event Recreated" in kube.calls


async def test_resource_being_deleted_is_left_alone() -> None:
    kube = RecordingKube()
    imd = _imd()
    imd["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert await _reconciler(kube).reconcile("ns", "a", imd, None, None) is None
    assert kube.calls == []


async def test_an_unlabelled_object_of_a_childs_name_is_not_taken_over() -> None:
    """Creating a child the watches have not seen is an apply without force: someone else's object of
    that name conflicts, is read, and the resource says NameConflict instead of adopting it."""
    kube = RecordingKube()
    kube.imd = _imd()
    kube.foreign["Service"] = {"kind": "Service", "metadata": {"name": "a", "namespace": "ns", "uid": "theirs"}}
    await _reconciler(kube).reconcile("ns", "a", _imd(), None, None)
    await _settle()
    assert kube.calls[:4] == ["apply Deployment", "apply Service", "get Service", "apply status"], kube.calls
    assert kube.forced == [False, False]
    ready = next(c for c in kube.imd["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NameConflict" and "Service a already exists" in ready["message"]
