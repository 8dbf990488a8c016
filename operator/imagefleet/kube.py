"""A thin async wrapper of the Kubernetes API for the operator's few writes.

Objects are plain dicts (camelCase JSON), never the client's generated models.
Children are written with server-side apply under one field manager, so an
apply is create-or-update in one request and never removes fields that other
managers (a user, the autoscaler, HPA) own. 429 and 5xx answers and broken
connections are retried with exponential backoff (honouring Retry-After, as API
Priority and Fairness sends it with its 429s); writes wait for a token of a
`WriteLimiter` shared by the operator's clients (client-side QPS and burst), so a
burst of changes is spread out in order rather than dropped;
409 Conflict is raised to the caller (status writes are forced applies and never
conflict, except the one-time AwaitingMetrics apply, which is not forced on purpose).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from . import GROUP, PLURAL, POOL_KIND, POOL_PLURAL, VERSION

FIELD_MANAGER = "imagefleet-operator"
# Sets MetricsAvailable=Unknown once on a new autoscaled resource, then never applies again.
INITIAL_METRICS_FIELD_MANAGER = "imagefleet-operator-initial-metrics"
USER_AGENT = "imagefleet-operator"
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_SECONDS = 30.0
EVENT_MESSAGE_LIMIT = 1024
# The longest Retry-After honoured as given (longer ones are waited this long, then retried).
RETRY_AFTER_LIMIT_SECONDS = 60.0

logger = logging.getLogger(__name__)


class KubeError(Exception):
    """An API request failed for good."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def _resource_version(obj: Mapping[str, Any]) -> int | None:
    """An object's resourceVersion as a number (etcd's revision; None when it is not one)."""
    value = obj.get("metadata", {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as plain dicts without metadata.managedFields: never read, and about half of an
    applied object. Nested values are shared with `obj` (the operator only reads them)."""
    raw = dict(obj)
    metadata = {key: value for key, value in raw.get("metadata", {}).items() if key != "managedFields"}
    return {**raw, "metadata": metadata}


def is_newer(written: Mapping[str, Any], seen: Mapping[str, Any]) -> bool:
    """Whether a write's response is later than a watch's copy of the same object (False when either
    cannot tell: the watch's copy is then trusted)."""
    written_version, seen_version = _resource_version(written), _resource_version(seen)
    return written_version is not None and seen_version is not None and written_version > seen_version


class Conflict(KubeError):
    """409: the object changed since it was read (or already exists)."""


class NotFound(KubeError):
    """404."""


def _path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    prefixes = {
        "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
        "Service": "/api/v1/namespaces/{ns}/services",
        "ImageModelDeployment": f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}",
        POOL_KIND: f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{POOL_PLURAL}",
        "InferencePool": "/apis/inference.networking.k8s.io/v1/namespaces/{ns}/inferencepools",
        "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
        "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
        "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
        "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
        "Secret": "/api/v1/namespaces/{ns}/secrets",
    }
    path = prefixes[kind].format(ns=namespace)
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.body or error.reason)


class WriteLimiter:
    """A token bucket: on average `qps` writes a second, up to `burst` at once.

    Waiters are served in arrival order, except that an urgent write goes ahead of every
    ordinary one still waiting. Only the autoscaler's scale patch is urgent: at 2,000
    resources a wave's 200 scale patches otherwise waited behind up to 810 of the round's
    status writes and Events (docs/scaling.md).
    """

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None
        # Waiters by (0 urgent / 1 ordinary, arrival): a heap.
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, *, urgent: bool = False) -> None:
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._arrivals), granted))
        self._grant(loop)
        await granted

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand out the tokens there are to the first waiters; wake again when the next token is due."""
        now = loop.time()
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now
        while self._waiting and self._tokens >= 1.0:
            *_, granted = heapq.heappop(self._waiting)
            if not granted.done():  # a cancelled waiter takes no token
                self._tokens -= 1.0
                granted.set_result(None)
        if self._waiting and self._timer is None:
            self._timer = loop.call_later((1.0 - self._tokens) / self.qps, self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._grant(loop)


class Kube:
    """Async API calls (each runs the synchronous client in a small thread pool)."""

    def __init__(
        self, api_client: client.ApiClient, *, attempts: int = 6, backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0, threads: int = 8, limiter: WriteLimiter | None = None,
    ) -> None:
        self.api_client = api_client
        self.limiter = limiter
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    @classmethod
    def from_environment(cls, limiter: WriteLimiter | None = None) -> Kube:
        """In-cluster credentials, else the current kubeconfig context (KUBECONFIG)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = 8
        api_client = client.ApiClient(configuration)
        # Set on the client this makes, never on a caller's (a shared test client would then
        # pass for the operator in the audit log).
        api_client.user_agent = USER_AGENT
        return cls(api_client, limiter=limiter)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    # -- requests ------------------------------------------------------------

    def _request_once(
        self, method: str, path: str, body: Any = None, content_type: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None,
        query: Mapping[str, str] | None = None, *, urgent: bool = False,
    ) -> dict[str, Any]:
        """One API request, retried on 429, 5xx and connection errors; a write waits for the limiter first
        (an `urgent` one ahead of the others waiting: `WriteLimiter`)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.attempts + 1):
            if self.limiter is not None and method != "GET":
                await self.limiter.acquire(urgent=urgent)
            try:
                return await loop.run_in_executor(
                    self._executor, self._request_once, method, path, body, content_type, query
                )
            except ApiException as error:
                status = int(error.status or 0)
                if status == 404:
                    raise NotFound(status, _message(error)) from error
                if status == 409:
                    raise Conflict(status, _message(error)) from error
                if status not in RETRIED_STATUSES or attempt == self.attempts:
                    raise KubeError(status, f"{method} {path}: {_message(error)}") from error
                delay = self._delay(attempt, (error.headers or {}).get("Retry-After"))
                logger.warning("%s %s answered %s; retrying in %.1fs", method, path, status, delay)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if attempt == self.attempts:
                    raise KubeError(None, f"{method} {path}: {error}") from error
                delay = self._delay(attempt, None)
                logger.warning("%s %s failed (%s); retrying in %.1fs", method, path, error, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), RETRY_AFTER_LIMIT_SECONDS)
        base = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return base * random.uniform(0.5, 1.0)

    # -- the operator's operations -------------------------------------------

    async def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply `manifest` (create or update); the live object (`trimmed`). Without `force`,
        fields another manager set to other values fail the apply with Conflict."""
        metadata = manifest["metadata"]
        return trimmed(await self.request(
            "PATCH", _path(manifest["kind"], metadata["namespace"], metadata["name"]), body=dict(manifest),
            content_type="application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"},
        ))

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete one object if it is still the one with `uid` (absent already: fine)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                "preconditions": {"uid": uid}}
        try:
            await self.request("DELETE", _path(kind, namespace, name), body=body, content_type="application/json")
        except NotFound:
            pass

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", _path(kind, namespace, name))
        except NotFound:
            return None

    async def apply_status(
        self, namespace: str, name: str, status: Mapping[str, Any], field_manager: str = FIELD_MANAGER,
        *, force: bool = True, kind: str = "ImageModelDeployment",
    ) -> dict[str, Any]:
        """Server-side apply the operator's fields of an ImageModelDeployment's (or `kind`'s) status.

        Conditions are a list map keyed by type: the apply sets the operator's
        conditions and leaves other managers' (the autoscaler's) untouched, with
        no read-modify-write race and no precondition to conflict on. Without
        `force`, a field another manager set to another value fails the apply
        with 409 (a write only where nobody has written). Returns the resource (`trimmed`).
        """
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        return trimmed(await self.request(
            "PATCH", _path(kind, namespace, name, "status"), body=body,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": field_manager, "force": "true" if force else "false"},
        ))

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, instance: str
    ) -> None:
        """Record a core/v1 Event about `involved` (best effort: a failure is logged, not raised)."""
        metadata = involved["metadata"]
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", "ImageModelDeployment"),
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": instance,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        try:
            await self.request("POST", f"/api/v1/namespaces/{metadata['namespace']}/events", body=body,
                               content_type="application/json")
        except KubeError as error:
            logger.warning("could not post Event %s for %s/%s: %s", reason, metadata["namespace"],
                           metadata["name"], error)
