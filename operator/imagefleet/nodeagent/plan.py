"""Pure decisions of the node agent: what a runtime pod asks for, its IP, its process's
environment, probe thresholds, restart back-off and the pod status to write.

Nothing here does I/O; `agent` feeds it pods and observations and applies the results.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..builders.labels import selector_labels
from ..catalog import GPUClass
from ..dev.components import SIMULATED_POD_CIDR

# What KWOK leaves to the agent and what the agent watches: every imagefleet runtime pod.
RUNTIME_LABEL = "app.kubernetes.io/name"
RUNTIME_VALUE = selector_labels("")[RUNTIME_LABEL]
RUNTIME_SELECTOR = f"{RUNTIME_LABEL}={RUNTIME_VALUE}"
# Marks on each runtime process, so that a restarted agent finds (and adopts) its processes.
AGENT_ID_VARIABLE = "IMAGEFLEET_NODE_AGENT_ID"
POD_UID_VARIABLE = "POD_UID"
# The kubelet's container restart back-off: 10 s, doubling, at most 5 minutes.
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
# How much of a crashed process's output goes into its container status (the kubelet's
# FallbackToLogsOnError takes the log's tail the same way).
MESSAGE_LINES = 6
MESSAGE_CHARS = 1024


@dataclass(frozen=True)
class Probe:
    """An HTTP probe as the pod spec gives it (Kubernetes defaults where it is silent)."""

    path: str
    port: int
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0


@dataclass(frozen=True)
class ProbeState:
    """Consecutive results and the verdict they give (None: no verdict yet)."""

    passing: bool | None = None
    successes: int = 0
    failures: int = 0


def observe(probe: Probe, state: ProbeState, success: bool) -> ProbeState:
    """The state after one probe result, with the kubelet's success and failure thresholds."""
    if success:
        successes = state.successes + 1
        passing = True if successes >= probe.success_threshold else state.passing
        return ProbeState(passing, successes, 0)
    failures = state.failures + 1
    passing = False if failures >= probe.failure_threshold else state.passing
    return ProbeState(passing, 0, failures)


@dataclass(frozen=True)
class RuntimePod:
    """The part of a runtime pod the agent acts on."""

    uid: str
    namespace: str
    name: str
    node: str
    container: str
    image: str
    env: Mapping[str, str]
    port: int
    readiness: Probe | None
    liveness: Probe | None
    startup: Probe | None
    grace_seconds: float
    deleting: bool
    pod_ip: str | None
    restarts: int = 0
    conditions: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_pod(pod: Mapping[str, Any]) -> RuntimePod:
    """A RuntimePod from a Pod as the API returns it (camelCase JSON)."""
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    container = spec["containers"][0]
    ports = {p.get("name"): int(p["containerPort"]) for p in container.get("ports") or []}
    port = ports.get("http", next(iter(ports.values()), 8000))  # the metrics port comes with the env
    deletion_grace = metadata.get("deletionGracePeriodSeconds")
    grace = deletion_grace if deletion_grace is not None else spec.get("terminationGracePeriodSeconds", 30)
    return RuntimePod(
        uid=metadata["uid"],
        namespace=metadata["namespace"],
        name=metadata["name"],
        node=spec.get("nodeName") or "",
        container=container["name"],
        image=container.get("image", ""),
        # Literal values only: the operator's runtime pods take no valueFrom settings.
        env={e["name"]: e["value"] for e in container.get("env") or [] if "value" in e},
        port=port,
        readiness=_probe(container.get("readinessProbe"), ports),
        liveness=_probe(container.get("livenessProbe"), ports),
        startup=_probe(container.get("startupProbe"), ports),
        grace_seconds=float(grace),
        deleting=metadata.get("deletionTimestamp") is not None,
        pod_ip=status.get("podIP"),
        restarts=sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or ()),
        conditions=tuple(status.get("conditions") or ()),
    )


def _probe(spec: Mapping[str, Any] | None, ports: Mapping[str | None, int]) -> Probe | None:
    if not spec or "httpGet" not in spec:
        return None
    get = spec["httpGet"]
    port = get.get("port")
    number = ports[port] if isinstance(port, str) else int(port)
    return Probe(
        path=get.get("path", "/"),
        port=number,
        period=float(spec.get("periodSeconds", 10)),
        timeout=float(spec.get("timeoutSeconds", 1)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
        success_threshold=int(spec.get("successThreshold", 1)),
        initial_delay=float(spec.get("initialDelaySeconds", 0)),
    )


# Each control plane's agent takes one block of the simulated range, so that two control
# planes on one machine (a test session and the demo, say) never hand out the same address.
AGENT_BLOCK_PREFIX = 22


def agent_pod_cidr(agent_id: str) -> str:
    """The block of SIMULATED_POD_CIDR that the agent with `agent_id` (hex) allocates from."""
    network = ipaddress.ip_network(SIMULATED_POD_CIDR)
    blocks = list(network.subnets(new_prefix=AGENT_BLOCK_PREFIX))
    return str(blocks[int(agent_id, 16) % len(blocks)])


def allocate_ip(used: Iterable[str], cidr: str) -> str:
    """The lowest free host address of `cidr` after the highest one in use (wrapping once).

    Moving past the highest keeps a just-freed address out of use for a while, as a
    CNI's allocator does, so a new pod does not inherit an old pod's scrape history.
    """
    network = ipaddress.ip_network(cidr)
    hosts = list(network.hosts())[1:]  # the first host address stays the gateway's, by convention
    taken = {ipaddress.ip_address(ip) for ip in used} & set(hosts)
    start = hosts.index(max(taken)) + 1 if taken else 0
    for candidate in hosts[start:] + hosts[:start]:
        if candidate not in taken:
            return str(candidate)
    raise RuntimeError(f"the simulated pod range {cidr} is full")


def gpu_class_for(node_labels: Mapping[str, str], classes: Mapping[str, GPUClass]) -> GPUClass | None:
    """The class of the card the node has: of the classes whose node selector the node's labels
    satisfy, a GPU class before a CPU one, then the most specific selector."""
    matching = [
        gpu_class
        for gpu_class in classes.values()
        if all(node_labels.get(key) == value for key, value in gpu_class.node_selector.items())
    ]
    return max(
        matching, key=lambda gpu_class: (gpu_class.gpu_resource is not None, len(gpu_class.node_selector)), default=None
    )


def process_env(
    pod: RuntimePod, ip: str, gpu_class: str, *, agent_id: str, emulation_speedup: float
) -> dict[str, str]:
    """The runtime's environment: the pod's own settings, at the pod's IP, on the emulated engine."""
    return {
        **pod.env,
        "IMAGEFLEET_HOST": ip,
        "IMAGEFLEET_PORT": str(pod.port),
        "IMAGEFLEET_ENGINE": "emulated",
        "IMAGEFLEET_GPU_CLASS": gpu_class,
        "IMAGEFLEET_EMULATION_SPEEDUP": repr(emulation_speedup),
        AGENT_ID_VARIABLE: agent_id,
        POD_UID_VARIABLE: pod.uid,
    }


def restart_delay(restarts: int) -> float:
    """Seconds to wait before restarting a process that has been restarted `restarts` times before.

    The first restart is immediate; then 10 s, doubling, at most 5 minutes, as the kubelet does.
    """
    if restarts == 0:
        return 0.0
    return min(BACKOFF_INITIAL_SECONDS * 2 ** (restarts - 1), BACKOFF_MAX_SECONDS)


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    message: str
    started_at: datetime
    finished_at: datetime


ContainerState = Running | Waiting | Terminated


def terminated(
    exit_code: int | None, log_tail: str, started_at: datetime, finished_at: datetime
) -> Terminated:
    """How an exited process shows in its container status: exit code, reason and the log's tail.

    A process killed by a signal exits 128 + the signal's number, as a container's does.
    An adopted process is not the agent's child, so its exit code cannot be read: that is
    reported as the kubelet reports a container it lost track of.
    """
    lines = [line for line in log_tail.splitlines() if line.strip()][-MESSAGE_LINES:]
    message = "\n".join(lines)[-MESSAGE_CHARS:]
    if exit_code is None:
        return Terminated(137, "ContainerStatusUnknown", message or "the process exited after the agent restarted",
                          started_at, finished_at)
    if exit_code < 0:
        exit_code = 128 - exit_code
    reason = "Completed" if exit_code == 0 else "Error"
    if "address already in use" in message.lower():
        reason = "AddressInUse"
    return Terminated(exit_code, reason, message, started_at, finished_at)


@dataclass(frozen=True)
class PodReport:
    """What the agent knows of one pod, from which its status follows."""

    ip: str
    host_ip: str
    start_time: datetime
    state: ContainerState
    last_terminated: Terminated | None = None
    restarts: int = 0
    started: bool = False
    ready: bool = False

    def with_state(self, state: ContainerState, **changes: Any) -> PodReport:
        return replace(self, state=state, **changes)


def pod_status(pod: RuntimePod, report: PodReport) -> dict[str, Any]:
    """The pod's status as the kubelet would write it (conditions other than ours are kept)."""
    running = isinstance(report.state, Running)
    ready = running and report.ready
    ours = {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": _bool(ready),
        "Ready": _bool(ready),
    }
    kept = [dict(c) for c in pod.conditions if c.get("type") not in ours]
    previous = {c.get("type"): c for c in pod.conditions}
    now = _time(datetime.now(UTC))
    conditions = kept + [
        {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": (
                previous[kind].get("lastTransitionTime")
                if kind in previous and previous[kind].get("status") == value
                else now
            ),
        }
        for kind, value in ours.items()
    ]
    container: dict[str, Any] = {
        "name": pod.container,
        "image": pod.image,
        "imageID": "",
        "ready": ready,
        "started": running and report.started,
        "restartCount": report.restarts,
        "state": _state(report.state),
        "lastState": _state(report.last_terminated) if report.last_terminated else {},
    }
    if running:
        container["containerID"] = f"imagefleet-agent://{pod.uid}-{report.restarts}"
    return {
        "phase": "Running" if running or report.restarts else "Pending",
        "conditions": conditions,
        "hostIP": report.host_ip,
        "hostIPs": [{"ip": report.host_ip}],
        "podIP": report.ip,
        "podIPs": [{"ip": report.ip}],
        "startTime": _time(report.start_time),
        "containerStatuses": [container],
    }


def _state(state: ContainerState) -> dict[str, Any]:
    match state:
        case Running(started_at):
            return {"running": {"startedAt": _time(started_at)}}
        case Waiting(reason, message):
            return {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        case Terminated(exit_code, reason, message, started_at, finished_at):
            return {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    **({"message": message} if message else {}),
                    "startedAt": _time(started_at),
                    "finishedAt": _time(finished_at),
                }
            }
    raise TypeError(state)


def _bool(value: bool) -> str:
    return "True" if value else "False"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
