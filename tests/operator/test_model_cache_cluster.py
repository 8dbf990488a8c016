"""The model cache on the local control plane: the operator, kube-apiserver, the Job, PV binder and
Deployment controllers and the scheduler are real; KWOK plays the kubelet of the simulated GPU nodes,
so the download pod "completes" by KWOK's pod-complete stage (it runs nothing) and no files are
downloaded here (tests/runtime/test_download.py runs the real download command)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from imagefleet.builders.labels import selector_string
from imagefleet.modelcache.layout import CACHE_LABEL, claim_name
from tests.conftest import Cluster
from tests.helpers import wait_until

from .harness import Imds, OperatorProcess

STORAGE_CLASS = "imagefleet-test-manual"
SPEC = {"model": {"name": "sd15", "cache": {"size": "8Gi", "storageClassName": STORAGE_CLASS}},
        "gpuClass": "t4-16gb", "precision": "fp16"}


class Recorder:
    """Watches one namespace's claims, Jobs and pods from a resourceVersion on, recording the etcd revision
    (resourceVersion) at which each thing first happened: the order of writes as the API server saw it."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core, self.batch = client.CoreV1Api(api), client.BatchV1Api(api)
        self.namespace = namespace
        self.first: dict[str, int] = {}
        self._watches: list[watch.Watch] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def _note(self, what: str, version: str) -> None:
        self.first.setdefault(what, int(version))

    def _run(self, lister: Callable[..., Any], since: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        stream = watch.Watch()
        self._watches.append(stream)
        try:
            for event in stream.stream(lister, self.namespace, resource_version=since, timeout_seconds=300):
                on_event(event)
        except ProtocolError:
            if not self._stopped.is_set():  # cut while recording: the test then misses an event and fails
                raise

    def start(self) -> None:
        since = self.core.list_namespaced_pod(self.namespace).metadata.resource_version

        def claims(event: dict[str, Any]) -> None:
            if event["type"] == "ADDED":
                self._note("claim", event["object"].metadata.resource_version)

        def jobs(event: dict[str, Any]) -> None:
            job = event["object"]
            if event["type"] == "ADDED":
                self._note("job", job.metadata.resource_version)
            if (job.status.succeeded or 0) >= 1:
                self._note("job succeeded", job.metadata.resource_version)

        def pods(event: dict[str, Any]) -> None:
            pod = event["object"]
            if event["type"] == "ADDED":
                kind = "download pod" if CACHE_LABEL in (pod.metadata.labels or {}) else "runtime pod"
                self._note(kind, pod.metadata.resource_version)

        for lister, handler in ((self.core.list_namespaced_persistent_volume_claim, claims),
                                (self.batch.list_namespaced_job, jobs), (self.core.list_namespaced_pod, pods)):
            thread = threading.Thread(target=self._run, args=(lister, since, handler), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopped.set()
        for stream in self._watches:
            stream.stop()


@pytest.fixture
def recorder(cluster: Cluster, namespace: str) -> Iterator[Recorder]:
    recording = Recorder(cluster.api_client, namespace)
    recording.start()
    yield recording
    recording.stop()


@pytest.fixture
def volume(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A PersistentVolume pre-bound to the cache claim: the test plays the storage provisioner (nothing is
    mounted: KWOK's nodes run no kubelet)."""
    name = f"{namespace}-cache"
    core = client.CoreV1Api(cluster.api_client)
    core.create_persistent_volume({"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "8Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
        "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{name}"},
        "claimRef": {"namespace": namespace, "name": claim_name("cached")}}})
    yield name
    try:
        core.delete_persistent_volume(name)
    except ApiException as error:
        if error.status != 404:
            raise


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_claim_then_job_then_pods(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess, recorder: Recorder, volume: str
) -> None:
    imds = Imds(cluster.api_client, namespace)
    core = client.CoreV1Api(cluster.api_client)
    imds.create("cached", SPEC)
    wait_until(lambda: "runtime pod" in recorder.first, timeout=90, message="a runtime pod")
    first = recorder.first
    print(f"first seen at resourceVersion: {first}")
    assert first["claim"] < first["job"] < first["download pod"] < first["job succeeded"] < first["runtime pod"], first
    cached = imds.condition("cached", "ModelCached")
    assert cached is not None and cached["status"] == "True" and cached["reason"] == "Cached", cached
    (pod,) = core.list_namespaced_pod(namespace, label_selector=selector_string("cached")).items
    (mount,) = [m for m in pod.spec.containers[0].volume_mounts if m.name == "model"]
    assert mount.read_only and mount.mount_path == "/models" and mount.sub_path == "sd15-fp16"
    (claim,) = [v for v in pod.spec.volumes if v.name == "model"]
    assert claim.persistent_volume_claim.claim_name == claim_name("cached") and claim.persistent_volume_claim.read_only

    def reasons() -> set[str]:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=cached").items
        return {event.reason for event in events}

    wait_until(lambda: {"DownloadStarted", "Cached"} <= reasons(), timeout=30, message="DownloadStarted and Cached Events")

    # Owner references: deleting the resource deletes the Job and the claim (the garbage collector).
    imds.delete("cached")
    batch = client.BatchV1Api(cluster.api_client)
    wait_until(lambda: not batch.list_namespaced_job(namespace).items
               and not core.list_namespaced_persistent_volume_claim(namespace).items,
               timeout=90, message="the Job and the claim to be garbage-collected")


def test_missing_secret_then_missing_key_then_the_job(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    core, batch = client.CoreV1Api(cluster.api_client), client.BatchV1Api(cluster.api_client)
    spec = {**SPEC, "model": {"name": "sd15", "cache": {"size": "8Gi", "tokenSecretRef": {"name": "hf", "key": "token"}}}}
    imds.create("gated", spec)

    def reason() -> str | None:
        cached = imds.condition("gated", "ModelCached")
        return None if cached is None else f"{cached['reason']}: {cached['message']}"

    missing = wait_until(lambda: (r := reason()) and r.startswith("SecretNotFound") and r, timeout=30,
                         message="ModelCached SecretNotFound")
    assert "Secret hf" in missing and namespace in missing
    # Ready is the main reconcile's, written beside ModelCached (the cache's): not necessarily before it.
    wait_until(lambda: (imds.condition("gated", "Ready") or {}).get("reason") == "AwaitingModelCache", timeout=30,
               message="Ready AwaitingModelCache")
    assert not batch.list_namespaced_job(namespace).items
    assert not core.list_namespaced_pod(namespace).items
    assert not _exists(lambda: client.AppsV1Api(cluster.api_client).read_namespaced_deployment("gated", namespace))

    # The Secret is not watched: the operator re-checks it with backoff.
    core.create_namespaced_secret(namespace, {"metadata": {"name": "hf"}, "stringData": {"other": "x"}})
    key = wait_until(lambda: (r := reason()) and r.startswith("SecretKeyMissing") and r, timeout=60,
                     message="ModelCached SecretKeyMissing")
    assert "'token'" in key
    assert not batch.list_namespaced_job(namespace).items and not core.list_namespaced_pod(namespace).items

    core.patch_namespaced_secret("hf", namespace, {"stringData": {"token": "hf_x"}})
    (job,) = wait_until(lambda: batch.list_namespaced_job(namespace).items, timeout=90, message="the download Job")
    (env,) = [e for e in job.spec.template.spec.containers[0].env if e.name == "HF_TOKEN"]
    assert env.value is None and env.value_from.secret_key_ref.name == "hf" and env.value_from.secret_key_ref.key == "token"
