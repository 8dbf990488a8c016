"""Run a plan: one reconcile of one ImageModelDeployment at a time, writing only what differs.

Every trigger (a spec change, a child's watch event, the resync timer) calls
`Reconciler.reconcile`, which takes the resource's lock, plans from the newest
known objects and writes. "Newest" matters for the request count: the watch
delivers the operator's own writes a moment later, so the responses of those
writes are kept until the watch catches up; planning from a stale view would
repeat a write.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..kube import INITIAL_METRICS_FIELD_MANAGER, Conflict, Kube, is_newer
from ..overflow import Problem
from .. import POOL_KIND
from ..builders.pool import pool_child_name
from .plan import DISRUPTION_BUDGET, INFERENCE_POOL, NETWORK_POLICY, Config, Event, Observed, Plan, plan
from .pool import CHILD_FIELDS as POOL_CHILD_FIELDS
from .pool import PoolObserved, PoolPlan, plan_pool

Key = tuple[str, str, str]  # kind, namespace, name

IMD = "ImageModelDeployment"
# The Observed field of each of Plan.children, in order.
CHILD_FIELDS = ("deployment", "service", "inference_pool", "disruption_budget", "network_policy")


class ForeignChild(Exception):
    """An object of a child's name exists that the watches did not show (`field` of Observed)."""

    def __init__(self, field: str, live: Mapping[str, Any]) -> None:
        super().__init__(f"{field}: {live.get('metadata', {}).get('name')}")
        self.field = field
        self.live = live


class Reconciler:
    def __init__(self, kube: Kube, config: Config) -> None:
        self.kube = kube
        self.config = config
        self.instance = socket.gethostname()
        self._posting: set[asyncio.Task[None]] = set()
        # Per resource (namespace, name), per pool (ImageModelPool, namespace, name).
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._written: dict[Key, dict[str, Any]] = {}
        # uid of each child this operator deleted, until the watch sees it gone.
        self._deleted: dict[Key, str] = {}
        # Per resource: the (uid, generation) its one-time AwaitingMetrics apply was sent for, answered or refused.
        self._awaiting_sent: dict[tuple[str, str], tuple[str, int | None]] = {}

    # -- the newest view -----------------------------------------------------

    def _newest(self, kind: str, namespace: str, name: str, seen: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """`seen` (from the watch), or the response of a later write of ours."""
        key = (kind, namespace, name)
        if seen is not None and self._deleted.get(key) == seen.get("metadata", {}).get("uid"):
            return None
        written = self._written.get(key)
        if written is None:
            return seen
        if seen is not None and not is_newer(written, seen):
            del self._written[key]
            return seen
        return written

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The watch saw `kind` `namespace/name` deleted."""
        self._written.pop((kind, namespace, name), None)
        self._deleted.pop((kind, namespace, name), None)
        if kind == IMD:
            self._locks.pop((namespace, name), None)
        if kind == POOL_KIND:
            self._locks.pop((POOL_KIND, namespace, name), None)
            self._awaiting_sent.pop((namespace, name), None)

    # -- reconcile -----------------------------------------------------------

    async def reconcile(
        self,
        namespace: str,
        name: str,
        imd: Mapping[str, Any] | None,
        deployment: Mapping[str, Any] | None,
        service: Mapping[str, Any] | None,
        *,
        inference_pool: Mapping[str, Any] | None = None,
        pool_crd_installed: bool = False,
        overflow_problem: Problem | None = None,
        disruption_budget: Mapping[str, Any] | None = None,
        free_gpus: int | None = None,
        network_policy: Mapping[str, Any] | None = None,
        model_pool: Mapping[str, Any] | None = None,
        model_pool_deployment: Mapping[str, Any] | None = None,
    ) -> Plan | None:
        """Bring one resource's children and status in line; the plan it carried out (None: nothing to do)."""
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            current = self._newest(IMD, namespace, name, imd)
            if current is None or current.get("metadata", {}).get("deletionTimestamp"):
                return None
            observed = Observed(
                imd=current,
                deployment=self._newest("Deployment", namespace, name, deployment),
                service=self._newest("Service", namespace, name, service),
                inference_pool=self._newest(INFERENCE_POOL, namespace, name, inference_pool),
                pool_crd_installed=pool_crd_installed,
                overflow_problem=overflow_problem,
                disruption_budget=self._newest(DISRUPTION_BUDGET, namespace, name, disruption_budget),
                free_gpus=free_gpus,
                network_policy=self._newest(NETWORK_POLICY, namespace, name, network_policy),
                model_pool=model_pool,
                model_pool_deployment=model_pool_deployment,
            )
            planned = self._plan(observed)
            if not planned.writes:
                return None
            try:
                await self._execute(planned, observed)
            except ForeignChild as found:
                # Not ours after all: plan again with it, which leaves it alone and says so (NameConflict).
                observed = replace(observed, **{found.field: found.live})
                planned = self._plan(observed)
                await self._execute(planned, observed)
            return planned

    async def reconcile_pool(
        self,
        namespace: str,
        name: str,
        pool: Mapping[str, Any] | None,
        deployment: Mapping[str, Any] | None,
        service: Mapping[str, Any] | None,
        network_policy: Mapping[str, Any] | None,
        members: tuple[Mapping[str, Any], ...],
        disruption_budget: Mapping[str, Any] | None = None,
    ) -> PoolPlan | None:
        """Bring one ImageModelPool's children (`<pool>-pool`) and status in line; the plan carried out."""
        child = pool_child_name(name)
        async with self._locks.setdefault((POOL_KIND, namespace, name), asyncio.Lock()):
            current = self._newest(POOL_KIND, namespace, name, pool)
            if current is None or current.get("metadata", {}).get("deletionTimestamp"):
                return None
            observed = PoolObserved(
                pool=current,
                deployment=self._newest("Deployment", namespace, child, deployment),
                service=self._newest("Service", namespace, child, service),
                network_policy=self._newest(NETWORK_POLICY, namespace, child, network_policy),
                members=members,
                disruption_budget=self._newest(DISRUPTION_BUDGET, namespace, child, disruption_budget),
            )
            planned = plan_pool(observed, self.config)
            if not planned.writes:
                return None
            try:
                await self._execute_pool(planned, observed)
            except ForeignChild as found:
                # Not ours after all: plan again with it, which leaves it alone and says so (NameConflict).
                observed = replace(observed, **{found.field: found.live})
                planned = plan_pool(observed, self.config)
                await self._execute_pool(planned, observed)
            return planned

    async def _execute_pool(self, planned: PoolPlan, observed: PoolObserved) -> None:
        pool = observed.pool
        namespace, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        child = pool_child_name(name)
        lives = tuple(getattr(observed, field) for field in POOL_CHILD_FIELDS)
        for child_plan, live, field in zip(planned.children, lives, POOL_CHILD_FIELDS, strict=True):
            if child_plan.action == "apply":
                assert child_plan.manifest is not None
                self._written[(child_plan.kind, namespace, child)] = await self._apply_child(
                    child_plan.manifest, live, field)
            elif child_plan.action == "delete":
                assert live is not None
                uid = live["metadata"]["uid"]
                await self.kube.delete(child_plan.kind, namespace, child, uid)
                self._written.pop((child_plan.kind, namespace, child), None)
                self._deleted[(child_plan.kind, namespace, child)] = uid
            await self._post(pool, child_plan.events)
        if planned.status is not None:
            self._written[(POOL_KIND, namespace, name)] = await self.kube.apply_status(
                namespace, name, planned.status, kind=POOL_KIND)
        await self._post(pool, planned.events)

    def _plan(self, observed: Observed) -> Plan:
        planned = plan(observed, self.config)
        metadata = observed.imd["metadata"]
        generation = (metadata.get("uid", ""), metadata.get("generation"))
        if planned.initial_metrics is not None and \
                self._awaiting_sent.get((metadata["namespace"], metadata["name"])) == generation:
            # Once per generation: a refused apply is not sent again from a copy that still lags.
            planned = replace(planned, initial_metrics=None)
        return planned

    async def _execute(self, planned: Plan, observed: Observed) -> None:
        imd = observed.imd
        metadata = imd["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        initial: asyncio.Task[None] | None = None
        if planned.initial_metrics is not None:
            # Alongside the first child, not after the status: before the Deployment exists no pod
            # can be ready, so the autoscaler cannot have reported yet. (Sent last, this apply waited
            # behind the others for write tokens and, at scale, nearly always found a verdict there.)
            self._awaiting_sent[(namespace, name)] = (metadata.get("uid", ""), metadata.get("generation"))
            initial = asyncio.create_task(self._apply_initial_metrics(namespace, name, planned.initial_metrics))
        try:
            await self._apply_children(planned, observed)
        finally:
            if initial is not None:
                await initial
        if planned.status is not None:
            self._written[(IMD, namespace, name)] = await self.kube.apply_status(namespace, name, planned.status)
        await self._post(imd, planned.events)

    async def _apply_children(self, planned: Plan, observed: Observed) -> None:
        imd = observed.imd
        namespace, name = imd["metadata"]["namespace"], imd["metadata"]["name"]
        lives = (observed.deployment, observed.service, observed.inference_pool, observed.disruption_budget,
                 observed.network_policy)
        for child, live, field in zip(planned.children, lives, CHILD_FIELDS, strict=True):
            if child.action == "apply":
                assert child.manifest is not None
                self._written[(child.kind, namespace, name)] = await self._apply_child(child.manifest, live, field)
            elif child.action == "delete":
                assert live is not None
                uid = live["metadata"]["uid"]
                await self.kube.delete(child.kind, namespace, name, uid)
                self._written.pop((child.kind, namespace, name), None)
                self._deleted[(child.kind, namespace, name)] = uid
            await self._post(imd, child.events)

    async def _apply_child(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None,
                           field: str) -> dict[str, Any]:
        """Apply a child. One the watches have not seen (they see only objects with the runtime labels)
        is applied without force: if an object of that name exists, made by someone else, its fields
        conflict and nothing is taken over (a forced apply would adopt it, and garbage collection would
        then delete it with the resource)."""
        try:
            return await self.kube.apply(manifest, force=live is not None)
        except Conflict:
            if live is not None:
                raise
            metadata = manifest["metadata"]
            found = await self.kube.get(manifest["kind"], metadata["namespace"], metadata["name"])
            if found is None:
                raise
            raise ForeignChild(field, found) from None

    async def _apply_initial_metrics(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            self._written[(IMD, namespace, name)] = await self.kube.apply_status(
                namespace, name, status, INITIAL_METRICS_FIELD_MANAGER, force=False
            )
        except Conflict:
            pass  # the autoscaler reported MetricsAvailable before this copy showed it: its verdict stands

    async def _post(self, imd: Mapping[str, Any], events: tuple[Event, ...]) -> None:
        """Post Events in the background: they are best effort and must not slow the reconcile."""
        for event in events:
            task = asyncio.create_task(self.kube.post_event(imd, event.type, event.reason, event.message,
                                                            self.instance))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
