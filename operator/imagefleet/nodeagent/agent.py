"""The node agent's I/O: a watch on runtime pods, one worker per pod, and a periodic sync.

Shaped like the kubelet: each pod has one worker that owns its process and is the only
writer of its status; a sync every SYNC_SECONDS relists the pods and stops processes
whose pod is gone (after an agent restart, say). A restarted agent adopts the processes
an earlier one started (found by the agent id in their environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from ..catalog import GPUClass
from . import plan, processes
from .plan import PodReport, Probe, ProbeState, Running, RuntimePod, Waiting

logger = logging.getLogger("imagefleet.nodeagent")

SYNC_SECONDS = 30.0
# After a failed relist (the API server restarting, say).
SYNC_RETRY_SECONDS = 2.0
# How often a worker checks that its process still runs, between probes.
EXIT_CHECK_SECONDS = 0.5
# On the agent's own SIGTERM (`imagefleet dev down`), how long runtimes get to drain.
SHUTDOWN_GRACE_SECONDS = 5.0
WATCH_TIMEOUT_SECONDS = 300


def agent_id(state_dir: Path) -> str:
    """The id marking this control plane's runtime processes (one agent per state directory)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    gpu_classes: Mapping[str, GPUClass]
    emulation_speedup: float = 1.0

    @property
    def logs(self) -> Path:
        """Each runtime's output, kept after `dev down` with the control plane's logs."""
        return self.state_dir / "logs" / "pods"


@dataclass(frozen=True)
class Node:
    labels: Mapping[str, str]
    internal_ip: str


class NodeAgent:
    """Runs the runtime pods of every simulated node."""

    def __init__(self, config: AgentConfig, api_client: client.ApiClient) -> None:
        self.config = config
        self.id = agent_id(config.state_dir)
        self.pod_cidr = plan.agent_pod_cidr(self.id)
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.workers: dict[str, PodWorker] = {}
        self.nodes: dict[str, Node] = {}
        self.http = httpx.AsyncClient()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ip_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain every runtime for a moment and return."""
        loop = asyncio.get_running_loop()
        orphans = processes.find(self.id)
        await self._sync(orphans)
        watcher = threading.Thread(target=self._watch, args=(loop, stop), name="pod-watch", daemon=True)
        watcher.start()
        next_sync = loop.time() + SYNC_SECONDS
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            getting = asyncio.create_task(self._events.get())
            done, _ = await asyncio.wait(
                {getting, stopping}, timeout=max(0.0, next_sync - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if getting in done:
                self._handle(getting.result(), {})
                continue
            getting.cancel()
            if stop.is_set():
                break
            try:
                await self._sync(processes.find(self.id))
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                logger.warning("cannot list the runtime pods (%s); retrying in %.0f s", error, SYNC_RETRY_SECONDS)
                next_sync = loop.time() + SYNC_RETRY_SECONDS
                continue
            next_sync = loop.time() + SYNC_SECONDS
        await self._shutdown()

    # -- pods --------------------------------------------------------------------------

    async def _sync(self, found: dict[str, list[int]]) -> None:
        """Relist the pods: start workers for new ones, and stop processes no pod owns."""
        pods = await asyncio.to_thread(
            self.core.list_pod_for_all_namespaces, label_selector=plan.RUNTIME_SELECTOR, field_selector="spec.nodeName!="
        )
        listed = {pod.metadata.uid for pod in pods.items}
        for pod in pods.items:
            self._handle(self.api_client.sanitize_for_serialization(pod), found)
        for uid, pids in found.items():
            if uid not in listed and uid not in self.workers:
                for pid in pids:
                    logger.info("stopping runtime process %d: its pod %s is gone", pid, uid)
                    asyncio.create_task(_stop(processes.adopt(pid, Path("/dev/null")), SHUTDOWN_GRACE_SECONDS))
        for uid in [uid for uid in self.workers if uid not in listed]:
            self.workers[uid].gone()

    def _handle(self, raw: dict[str, Any], found: Mapping[str, list[int]]) -> None:
        pod = plan.parse_pod(raw)
        worker = self.workers.get(pod.uid)
        if raw.get("_deleted"):
            if worker is not None:
                worker.gone()
            return
        if worker is not None:
            worker.update(pod)
            return
        if pod.node not in self.nodes:
            self._refresh_nodes()
        self.workers[pod.uid] = worker = PodWorker(self, pod, list(found.get(pod.uid, ())))
        worker.task = asyncio.create_task(worker.run(), name=f"pod {pod.key}")

    def _watch(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """Feed pod events to the loop (a thread: the Kubernetes client is synchronous)."""
        while not stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=plan.RUNTIME_SELECTOR,
                    field_selector="spec.nodeName!=",
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                ):
                    raw = self.api_client.sanitize_for_serialization(event["object"])
                    if event["type"] == "DELETED":
                        raw["_deleted"] = True
                    loop.call_soon_threadsafe(self._events.put_nowait, raw)
            except Exception as error:  # noqa: BLE001 - the watch restarts; the periodic sync repairs
                if stop.is_set():
                    return
                logger.warning("pod watch ended (%s); restarting", error)
                time.sleep(1.0)

    def _refresh_nodes(self) -> None:
        for node in self.core.list_node().items:
            address = next((a.address for a in node.status.addresses or [] if a.type == "InternalIP"), "")
            self.nodes[node.metadata.name] = Node(dict(node.metadata.labels or {}), address)

    async def allocate_ip(self) -> str:
        async with self._ip_lock:
            used = {worker.report.ip for worker in self.workers.values() if worker.report is not None}
            used |= {worker.pod.pod_ip for worker in self.workers.values() if worker.pod.pod_ip}
            return plan.allocate_ip(used, self.pod_cidr)

    def forget(self, uid: str) -> None:
        self.workers.pop(uid, None)

    async def _shutdown(self) -> None:
        workers = list(self.workers.values())
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        await self.http.aclose()

    # -- API writes ----------------------------------------------------------------------

    async def write_status(self, pod: RuntimePod, status: dict[str, Any]) -> bool:
        """Whether the status was written; a failure (the API server restarting, say) is retried by the caller."""
        try:
            await asyncio.to_thread(self.core.patch_namespaced_pod_status, pod.name, pod.namespace, {"status": status})
        except ApiException as error:
            if error.status != 404:
                logger.warning("cannot write the status of pod %s: %s", pod.key, error.reason)
            return False
        except urllib3.exceptions.HTTPError as error:
            logger.warning("cannot write the status of pod %s: %s", pod.key, error)
            return False
        return True

    async def delete_pod(self, pod: RuntimePod) -> None:
        """Finish a graceful deletion, as the kubelet does once the containers have stopped."""
        options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.uid))
        try:
            await asyncio.to_thread(self.core.delete_namespaced_pod, pod.name, pod.namespace, body=options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise


class PodWorker:
    """Owns one pod's process and is the only writer of the pod's status."""

    def __init__(self, agent: NodeAgent, pod: RuntimePod, adopted: list[int]) -> None:
        self.agent = agent
        self.pod = pod
        self.adopted = adopted
        self.report: PodReport | None = None
        self.process: processes.RuntimeProcess | None = None
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._gone = False
        self._written: dict[str, Any] | None = None
        self._probes: dict[str, ProbeState] = {}
        self._due: dict[str, float] = {}

    def update(self, pod: RuntimePod) -> None:
        self.pod = pod
        if pod.deleting:
            self._wake.set()

    def gone(self) -> None:
        """The pod was removed without the agent (forced deletion): stop its process."""
        self._gone = True
        self._wake.set()

    @property
    def log(self) -> Path:
        pod = self.pod
        return self.agent.config.logs / f"{pod.namespace}_{pod.name}_{pod.uid}" / "runtime.log"

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            logger.exception("worker of pod %s failed", self.pod.key)
            raise
        finally:
            self.agent.forget(self.pod.uid)

    async def _run(self) -> None:
        pod = self.pod
        node = self.agent.nodes.get(pod.node)
        ip = pod.pod_ip or await self.agent.allocate_ip()
        now = datetime.now(UTC)
        self.report = PodReport(ip, node.internal_ip if node else "", now, Waiting("ContainerCreating"),
                                restarts=pod.restarts)
        gpu_class = plan.gpu_class_for(node.labels, self.agent.config.gpu_classes) if node else None
        self._adopt()
        if gpu_class is None and self.process is None:
            message = f"node {pod.node!r} matches no GPU class of the catalog"
            self.report = self.report.with_state(Waiting("CreateContainerConfigError", message))
            await self._write()
        while not self._gone:
            if self.pod.deleting:
                await self._terminate(self.pod.grace_seconds)
                await self.agent.delete_pod(self.pod)
                return
            if self.process is None:
                if gpu_class is None or not await self._start_after_back_off(gpu_class):
                    await self._sleep(EXIT_CHECK_SECONDS if gpu_class else SYNC_SECONDS)
                    continue
            await self._check()
            await self._write()
            await self._sleep(self._next_wake())
        await self._terminate(SHUTDOWN_GRACE_SECONDS)

    def _adopt(self) -> None:
        """Take over a process an earlier agent started for this pod; stop any duplicates."""
        if not self.adopted:
            return
        keep, *extra = self.adopted
        for pid in extra:
            logger.info("pod %s: stopping duplicate runtime process %d", self.pod.key, pid)
            asyncio.create_task(_stop(processes.adopt(pid, self.log), SHUTDOWN_GRACE_SECONDS))
        self.process = processes.adopt(keep, self.log)
        assert self.report is not None
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in self.pod.conditions)
        self.report = self.report.with_state(Running(self.process.started_at), started=True, ready=ready)
        # Keep its probes' verdicts until they are probed again.
        self._probes = {"startup": ProbeState(True), "readiness": ProbeState(ready), "liveness": ProbeState(True)}
        logger.info("pod %s: adopted runtime process %d", self.pod.key, keep)

    async def _start_after_back_off(self, gpu_class: GPUClass) -> bool:
        """Start the process after the restart back-off; False if the pod was deleted meanwhile."""
        assert self.report is not None
        delay = plan.restart_delay(self.report.restarts - 1 if self.report.last_terminated else 0)
        if delay:
            message = f"back-off {delay:.0f}s restarting failed container={self.pod.container} pod={self.pod.key}"
            self.report = self.report.with_state(Waiting("CrashLoopBackOff", message), ready=False, started=False)
            await self._write()
            deadline = asyncio.get_running_loop().time() + delay
            while not (self.pod.deleting or self._gone):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                await self._sleep(remaining)
            if self.pod.deleting or self._gone:
                return False
        env = plan.process_env(
            self.pod, self.report.ip, gpu_class.name,
            agent_id=self.agent.id, emulation_speedup=self.agent.config.emulation_speedup,
        )
        self.process = processes.start(env, self.log)
        self.report = self.report.with_state(Running(self.process.started_at), started=False, ready=False)
        now = asyncio.get_running_loop().time()
        self._probes = {}
        self._due = {name: now + probe.initial_delay for name, probe in self._probe_specs().items()}
        logger.info("pod %s: started runtime process %d at %s", self.pod.key, self.process.pid, self.report.ip)
        return True

    def _probe_specs(self) -> dict[str, Probe]:
        specs = {"startup": self.pod.startup, "liveness": self.pod.liveness, "readiness": self.pod.readiness}
        return {name: probe for name, probe in specs.items() if probe is not None}

    async def _check(self) -> None:
        """Notice an exit, and run the probes that are due (startup first, as the kubelet does)."""
        assert self.process is not None and self.report is not None
        exited, code = self.process.exited()
        if exited:
            self._exited(code)
            return
        loop = asyncio.get_running_loop()
        specs = self._probe_specs()
        started = "startup" not in specs or self._probes.get("startup", ProbeState()).passing is True
        for name, probe in specs.items():
            if (name == "startup") == started or loop.time() < self._due.get(name, 0.0):
                continue
            self._due[name] = loop.time() + probe.period
            success = await self._probe(probe)
            self._probes[name] = plan.observe(probe, self._probes.get(name, ProbeState()), success)
        startup_passing = "startup" not in specs or self._probes.get("startup", ProbeState()).passing is True
        liveness = self._probes.get("liveness", ProbeState())
        if startup_passing and liveness.passing is False:
            logger.info("pod %s: liveness probe failed; restarting its runtime", self.pod.key)
            await self._terminate(self.pod.grace_seconds)
            self._exited(None, reason="the liveness probe failed; the runtime was restarted")
            return
        readiness = self._probes.get("readiness", ProbeState())
        ready = startup_passing and (readiness.passing is True if "readiness" in specs else True)
        self.report = self.report.with_state(self.report.state, started=startup_passing, ready=ready)

    def _exited(self, code: int | None, reason: str | None = None) -> None:
        assert self.process is not None and self.report is not None
        state = self.report.state
        started_at = state.started_at if isinstance(state, Running) else self.process.started_at
        tail = reason or self.process.log_tail()
        terminated = plan.terminated(code, tail, started_at, datetime.now(UTC))
        if reason:
            terminated = plan.Terminated(137, "Error", reason, started_at, terminated.finished_at)
        logger.info("pod %s: runtime exited (%s, %s)", self.pod.key, terminated.exit_code, terminated.reason)
        self.process = None
        self.report = self.report.with_state(
            terminated, last_terminated=terminated, restarts=self.report.restarts + 1, ready=False, started=False
        )

    async def _probe(self, probe: Probe) -> bool:
        assert self.report is not None
        url = f"http://{self.report.ip}:{probe.port}{probe.path}"
        try:
            response = await self.agent.http.get(url, timeout=probe.timeout)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    def _next_wake(self) -> float:
        if not self._due:
            return EXIT_CHECK_SECONDS
        soonest = min(self._due.values()) - asyncio.get_running_loop().time()
        return max(0.05, min(EXIT_CHECK_SECONDS, soonest))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _write(self) -> None:
        assert self.report is not None
        status = plan.pod_status(self.pod, self.report)
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                               for c in status["conditions"]]}
        if comparable != self._written and await self.agent.write_status(self.pod, status):
            self._written = comparable

    async def _terminate(self, grace: float) -> None:
        if self.process is not None:
            await _stop(self.process, grace)
            self.process = None

    async def shutdown(self) -> None:
        """The agent stops: stop this pod's process (the pod stays)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self._terminate(SHUTDOWN_GRACE_SECONDS)


async def _stop(process: processes.RuntimeProcess, grace: float) -> None:
    """SIGTERM (the runtime drains), then SIGKILL after `grace` seconds."""
    process.signal(signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + grace
    while asyncio.get_running_loop().time() < deadline:
        if process.exited()[0]:
            return
        await asyncio.sleep(0.1)
    process.signal(signal.SIGKILL)
    while not process.exited()[0]:
        await asyncio.sleep(0.05)


def serve(state_dir: Path, kubeconfig: Path, emulation_speedup: float) -> None:
    """Run the agent until SIGTERM or SIGINT; then stop the runtimes it runs."""
    from kubernetes import config

    from ..catalog import load_gpu_classes

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per probe
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    agent = NodeAgent(AgentConfig(state_dir, load_gpu_classes(), emulation_speedup), api_client)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        await agent.run(stop)

    asyncio.run(main())
