"""One round of measured memory: one Prometheus query reads every resource's largest peak over its pods,
then a status write and a Warning Event where `plan` says so."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from imagefleet import metrics

from ..autoscaling.prometheus import PrometheusClient, PrometheusError, Sample
from ..autoscaling.queries import NAME_LABEL, NAMESPACE_LABEL
from ..kube import Kube, KubeError
from .plan import CUDA, PROCESS, Collision, Measurement, plan

Key = tuple[str, str]
FIELD_MANAGER = "imagefleet-memory"
SOURCE_LABEL = "source"
JOB_LABEL = "job"
MIB = 1024 * 1024

logger = logging.getLogger(__name__)


def peak_query() -> str:
    """Every resource's largest peak over its pods, by scrape job (to see collisions) and source."""
    by = f"{NAMESPACE_LABEL}, {NAME_LABEL}, {JOB_LABEL}, {SOURCE_LABEL}"
    return f'max by ({by}) ({metrics.MEMORY_BYTES}{{kind="peak",{NAME_LABEL}!=""}})'


def measurements(samples: Iterable[Sample]) -> dict[Key, Measurement | Collision]:
    """Each resource's measurement from the query's answer: a card's figure wins over a process's (a pod
    rolling from the emulated engine to a GPU reports both for a while); NaN and negative values are no figure."""
    by_key: dict[Key, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.value >= 0:  # False for NaN too
            by_key[(sample.labels.get(NAMESPACE_LABEL, ""), sample.labels.get(NAME_LABEL, ""))].append(sample)
    found: dict[Key, Measurement | Collision] = {}
    for key, series in by_key.items():
        jobs = sorted({sample.labels.get(JOB_LABEL, "") for sample in series})
        if len(jobs) > 1:
            found[key] = Collision(tuple(jobs))
            continue
        cuda = [sample.value for sample in series if sample.labels.get(SOURCE_LABEL) == CUDA]
        values, source = (cuda, CUDA) if cuda else ([sample.value for sample in series], PROCESS)
        found[key] = Measurement(round(max(values) / MIB), source)
    return found


class MemoryReporter:
    """Reads the pods' peak memory and reports it on each resource; remembers what it last wrote."""

    def __init__(self, kube: Kube, prometheus: PrometheusClient) -> None:
        self.kube = kube
        self.prometheus = prometheus
        self.instance = socket.gethostname()
        # By uid: the status.measuredMemory last written (the watch-fed copy may not show it yet).
        self._written: dict[str, dict[str, Any]] = {}
        # Resources whose series collide, with the jobs, so the warning is logged once per change.
        self._collisions: dict[Key, tuple[str, ...]] = {}
        self._failing = False

    async def aclose(self) -> None:
        await self.prometheus.aclose()
        self.kube.close()

    async def round(self, resources: Sequence[Mapping[str, Any]]) -> int:
        """Report every resource that has a measurement; the status writes made. A resource with no series
        keeps the figure last written (a resource at zero replicas still shows what it used)."""
        try:
            found = measurements(await self.prometheus.query(peak_query()))
        except PrometheusError as error:
            if not self._failing:  # once per outage: the autoscaler's MetricsAvailable reports it per resource
                logger.warning("measured memory not read until Prometheus answers again: %s", error)
            self._failing = True
            return 0
        if self._failing:
            logger.info("measured memory read again")
        self._failing = False
        uids, keys = {resource["metadata"]["uid"] for resource in resources}, {_key(resource) for resource in resources}
        self._written = {uid: written for uid, written in self._written.items() if uid in uids}
        self._collisions = {key: jobs for key, jobs in self._collisions.items() if key in keys}
        writes = await asyncio.gather(*(self._report(resource, found.get(_key(resource))) for resource in resources))
        return sum(writes)

    async def _report(self, resource: Mapping[str, Any], found: Measurement | Collision | None) -> bool:
        metadata = resource["metadata"]
        key = _key(resource)
        if isinstance(found, Collision):
            if self._collisions.get(key) != found.jobs:
                logger.warning("%s/%s: memory series come from %d scrape jobs (%s): another exporter uses this "
                               "resource's labels; none is taken", *key, len(found.jobs), ", ".join(found.jobs))
            self._collisions[key] = found.jobs
            return False
        self._collisions.pop(key, None)
        if found is None:
            return False
        status = resource.get("status") or {}
        written = self._written.get(metadata["uid"]) or status.get("measuredMemory")
        verdict = plan(found, written, status.get("memory"), resource["spec"]["gpuClass"], datetime.now(UTC))
        if verdict.status is None:
            return False
        try:
            await self.kube.apply_status(*key, {"measuredMemory": verdict.status}, FIELD_MANAGER)
        except KubeError as error:
            logger.warning("%s/%s: could not write the measured memory: %s", *key, error)
            return False
        self._written[metadata["uid"]] = verdict.status
        if verdict.warning is not None:
            await self.kube.post_event(resource, "Warning", *verdict.warning, self.instance)
        return True


def _key(resource: Mapping[str, Any]) -> Key:
    return resource["metadata"]["namespace"], resource["metadata"]["name"]
