"""Carry out a model-cache plan: check the token Secret, create the claim and the Job, write ModelCached.

ModelCached is applied under a field manager of its own, so the operator's main
status apply (which does not list it) leaves it alone, and a resource that drops
spec.model.cache loses it with one empty apply.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .. import conditions as c
from ..builders.labels import Owner
from ..catalog import GPUClass
from ..crd.models import ImageModelDeploymentSpec, SecretKeySelector
from ..kube import Kube
from ..resolve import resolve
from .plan import (
    CACHED,
    DOWNLOAD_STARTED,
    MODEL_CACHED,
    WARNING_REASONS,
    CacheObserved,
    SecretCheck,
    Verdict,
    condition,
    plan_cache,
    secret_to_check,
)

FIELD_MANAGER = "imagefleet-operator-model-cache"

Key = tuple[str, str]


class CacheReconciler:
    def __init__(self, kube: Kube, gpu_classes: Mapping[str, GPUClass], runtime_image: str) -> None:
        self.kube = kube
        self.gpu_classes = dict(gpu_classes)
        self.runtime_image = runtime_image
        self.instance = socket.gethostname()
        self._locks: dict[Key, asyncio.Lock] = {}
        # What this operator created and the watch may not have delivered yet: never created twice.
        self._created: dict[Key, dict[str, Mapping[str, Any]]] = {}
        self._posting: set[asyncio.Task[None]] = set()

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._created.pop((namespace, name), None)

    async def _check_secret(self, namespace: str, ref: SecretKeySelector) -> SecretCheck:
        """Whether the Secret and its key exist (a GET; the value is never kept or copied)."""
        secret = await self.kube.get("Secret", namespace, ref.name)
        if secret is None:
            return "NotFound"
        return "Found" if ref.key in (secret.get("data") or {}) else "KeyMissing"

    def _with_created(self, key: Key, kind: str, seen: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        names = {obj["metadata"]["name"] for obj in seen}
        created = self._created.setdefault(key, {})
        for name in [name for name in created if name in names]:
            del created[name]
        return [*seen, *(obj for obj in created.values() if obj["kind"] == kind)]

    async def reconcile(
        self, imd: Mapping[str, Any], claim: Mapping[str, Any] | None, jobs: Sequence[Mapping[str, Any]],
        failure: str | None,
    ) -> Verdict | None:
        """Bring one resource's cache in line; its ModelCached verdict (None: it asks for no cache)."""
        metadata = imd["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        key = (namespace, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if metadata.get("deletionTimestamp"):
                return None
            try:
                spec = ImageModelDeploymentSpec.model_validate(imd.get("spec") or {})
            except ValidationError:
                return None  # the main reconcile reports it (InvalidSpec)
            current = imd.get("status") or {}
            if spec.model.cache is None:
                if c.find(current.get("conditions"), MODEL_CACHED) is not None:
                    await self.kube.apply_status(namespace, name, {"conditions": []}, FIELD_MANAGER)
                return None
            owner = Owner(name=name, namespace=namespace, uid=metadata["uid"])
            resolved = resolve(spec, self.gpu_classes)
            claims = self._with_created(key, "PersistentVolumeClaim", [claim] if claim is not None else [])
            all_jobs = self._with_created(key, "Job", jobs)
            secret: SecretCheck | None = None
            if secret_to_check(owner, spec, resolved.precision, all_jobs) is not None:
                assert spec.model.cache.token_secret_ref is not None
                secret = await self._check_secret(namespace, spec.model.cache.token_secret_ref)
            observed = CacheObserved(claims[0] if claims else None, all_jobs, failure, secret)
            planned = plan_cache(owner, spec, resolved.precision, resolved.gpu_class, self.runtime_image, observed)
            for manifest in (planned.claim, planned.job):
                if manifest is not None:
                    self._created[key][manifest["metadata"]["name"]] = await self.kube.apply(manifest)
            if planned.job is not None:
                self._post(imd, "Normal", DOWNLOAD_STARTED, planned.verdict[2])
            for job, uid in planned.delete_jobs:
                await self.kube.delete("Job", namespace, job, uid)
            wanted = condition(planned.verdict, current, metadata.get("generation"))
            before = c.find(current.get("conditions"), MODEL_CACHED)
            if before != wanted:
                await self.kube.apply_status(namespace, name, {"conditions": [wanted]}, FIELD_MANAGER)
                status, reason, message = planned.verdict
                if before is None or (before.get("status"), before.get("reason")) != (status, reason):
                    if reason in WARNING_REASONS:
                        self._post(imd, "Warning", reason, message)
                    elif reason == CACHED:
                        self._post(imd, "Normal", CACHED, message)
            return planned.verdict

    def _post(self, imd: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Events are best effort: posted in the background."""
        task = asyncio.get_running_loop().create_task(
            self.kube.post_event(imd, type_, reason, message, self.instance))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)
