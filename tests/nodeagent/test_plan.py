"""The node agent's pure decisions: pods, IPs, probes, back-off and the status it writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagefleet.builders.deployment import build_deployment
from imagefleet.builders.labels import Owner
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.dev.fleet import load_fleet, node_manifests
from imagefleet.nodeagent import plan
from imagefleet.resolve import resolve

CLASSES = load_gpu_classes()
T0 = datetime(2026, 11, 29, 7, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 29, 7, 0, 5, tzinfo=UTC)


def _pod(**status: Any) -> dict[str, Any]:
    """A pod as the operator's Deployment makes it, scheduled on h100-80gb-0."""
    spec = ImageModelDeploymentSpec.model_validate({"model": {"name": "sdxl"}, "gpuClass": "h100-80gb", "tier": "bulk"})
    resolved = resolve(spec, CLASSES)
    template = build_deployment(Owner("thumbs", "demo", "uid-1"), resolved, 1, "runtime:1")["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "name": "thumbs-abc", "namespace": "demo", "uid": "pod-uid"},
        "spec": {**template["spec"], "nodeName": "h100-80gb-0"},
        "status": status,
    }


def test_a_runtime_pod_is_read_with_its_port_probes_and_grace() -> None:
    raw = _pod()
    pod = plan.parse_pod(raw)
    assert (pod.key, pod.node, pod.port, pod.container, pod.image) == (
        "demo/thumbs-abc", "h100-80gb-0", 8000, "runtime", "runtime:1"
    )
    assert pod.env["IMAGEFLEET_MODEL"] == "sdxl" and pod.env["IMAGEFLEET_HOST"] == "0.0.0.0"
    assert pod.readiness == plan.Probe("/readyz", 8000, period=5, timeout=1, failure_threshold=2)
    assert pod.liveness == plan.Probe("/healthz", 8000, period=10, timeout=5, failure_threshold=3)
    assert pod.startup is not None and pod.startup.failure_threshold == 90
    assert pod.grace_seconds == raw["spec"]["terminationGracePeriodSeconds"] > 180  # bulk SDXL: a long drain
    assert not pod.deleting and pod.pod_ip is None


def test_a_deleted_pod_takes_the_grace_period_of_its_deletion() -> None:
    raw = _pod(podIP="127.100.0.9", containerStatuses=[{"restartCount": 3}])
    raw["metadata"] |= {"deletionTimestamp": "2026-11-29T07:00:00Z", "deletionGracePeriodSeconds": 7}
    pod = plan.parse_pod(raw)
    assert (pod.deleting, pod.grace_seconds, pod.pod_ip, pod.restarts) == (True, 7.0, "127.100.0.9", 3)


def test_the_runtime_selector_matches_the_pods_the_operator_makes() -> None:
    labels = _pod()["metadata"]["labels"]
    key, value = plan.RUNTIME_SELECTOR.split("=")
    assert labels[key] == value


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (set(), "127.100.0.2"),
        ({"127.100.0.2", "127.100.0.3"}, "127.100.0.4"),
        # after the highest in use, not into a hole just freed
        ({"127.100.0.2", "127.100.0.9"}, "127.100.0.10"),
        # addresses outside the range do not count
        ({"10.0.0.1", "127.0.0.1"}, "127.100.0.2"),
        # wraps around once the top is taken
        ({"127.100.255.254"}, "127.100.0.2"),
    ],
)
def test_pod_ips_come_from_the_loopback_range_of_their_own(used: set[str], expected: str) -> None:
    assert plan.allocate_ip(used, "127.100.0.0/16") == expected


def test_each_agent_allocates_from_a_block_of_its_own() -> None:
    blocks = {plan.agent_pod_cidr(f"{n:016x}") for n in range(64)}
    assert len(blocks) == 64 and "127.100.0.0/22" in blocks and "127.100.252.0/22" in blocks


def test_a_full_range_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="full"):
        plan.allocate_ip({"127.100.0.2", "127.100.0.3"}, cidr="127.100.0.0/30")


def test_each_simulated_node_maps_to_its_gpu_class() -> None:
    found = {
        node["metadata"]["name"]: plan.gpu_class_for(node["metadata"]["labels"], CLASSES)
        for node in node_manifests(load_fleet())
    }
    assert {name: gpu_class.name if gpu_class else None for name, gpu_class in found.items()} == {
        name: name.rsplit("-", 1)[0] for name in found
    }
    assert plan.gpu_class_for({"kubernetes.io/os": "windows"}, CLASSES) is None


def test_the_process_runs_the_pods_settings_at_the_pods_ip_on_the_emulated_engine() -> None:
    env = plan.process_env(plan.parse_pod(_pod()), "127.100.0.7", "h100-80gb", agent_id="a1", emulation_speedup=4.0)
    assert env["IMAGEFLEET_MODEL"] == "sdxl" and env["IMAGEFLEET_MAX_BATCH_SIZE"] == "8"
    assert (env["IMAGEFLEET_HOST"], env["IMAGEFLEET_PORT"]) == ("127.100.0.7", "8000")
    assert (env["IMAGEFLEET_ENGINE"], env["IMAGEFLEET_GPU_CLASS"], env["IMAGEFLEET_EMULATION_SPEEDUP"]) == (
        "emulated", "h100-80gb", "4.0"
    )
    assert (env[plan.AGENT_ID_VARIABLE], env[plan.POD_UID_VARIABLE]) == ("a1", "pod-uid")


def test_probe_verdicts_follow_the_kubelets_thresholds() -> None:
    probe = plan.Probe("/readyz", 8000, failure_threshold=2, success_threshold=2)
    state = plan.ProbeState()
    verdicts = []
    for success in (True, True, False, True, False, False, True):
        state = plan.observe(probe, state, success)
        verdicts.append(state.passing)
    assert verdicts == [None, True, True, True, True, False, False]


def test_restart_back_off_is_the_kubelets() -> None:
    assert [plan.restart_delay(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]


def test_an_exit_shows_its_code_reason_and_the_logs_tail() -> None:
    log = "\n".join(f"line {n}" for n in range(20)) + "\nimagefleet-runtime: invalid settings: gpu_class unknown\n"
    result = plan.terminated(2, log, T0, T1)
    assert (result.exit_code, result.reason) == (2, "Error")
    assert result.message.splitlines()[-1] == "imagefleet-runtime: invalid settings: gpu_class unknown"
    assert len(result.message.splitlines()) == plan.MESSAGE_LINES
    taken = plan.terminated(1, "ERROR: [Errno 98] error while attempting to bind: address already in use", T0, T1)
    assert taken.reason == "AddressInUse"
    lost = plan.terminated(None, "", T0, T1)
    assert (lost.exit_code, lost.reason) == (137, "ContainerStatusUnknown")


def test_status_of_a_ready_pod() -> None:
    pod = plan.parse_pod(_pod(conditions=[{"type": "PodScheduled", "status": "True"}]))
    report = plan.PodReport("127.100.0.7", "10.0.0.1", T0, plan.Running(T0), started=True, ready=True)
    status = plan.pod_status(pod, report)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodScheduled": "True", "PodReadyToStartContainers": "True", "Initialized": "True",
        "ContainersReady": "True", "Ready": "True",
    }
    assert (status["phase"], status["podIP"], status["podIPs"]) == ("Running", "127.100.0.7", [{"ip": "127.100.0.7"}])
    (container,) = status["containerStatuses"]
    assert container["ready"] and container["started"] and container["restartCount"] == 0
    assert container["state"] == {"running": {"startedAt": "2026-11-29T07:00:00Z"}}


def test_status_of_a_crash_looping_pod_shows_the_error() -> None:
    pod = plan.parse_pod(_pod())
    crash = plan.terminated(2, "invalid settings: engine emulated needs gpu_class", T0, T1)
    report = plan.PodReport(
        "127.100.0.7", "10.0.0.1", T0, plan.Waiting("CrashLoopBackOff", "back-off 10s"), crash, restarts=2
    )
    status = plan.pod_status(pod, report)
    (container,) = status["containerStatuses"]
    assert not container["ready"] and container["restartCount"] == 2
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert container["lastState"]["terminated"] | {} == {
        "exitCode": 2, "reason": "Error", "message": "invalid settings: engine emulated needs gpu_class",
        "startedAt": "2026-11-29T07:00:00Z", "finishedAt": "2026-11-29T07:00:05Z",
    }
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


def test_a_condition_keeps_its_transition_time_while_unchanged() -> None:
    earlier = {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-29T06:00:00Z"}
    pod = plan.parse_pod(_pod(conditions=[earlier]))
    unready = plan.PodReport("127.100.0.7", "", T0, plan.Running(T0))
    ready = plan.PodReport("127.100.0.7", "", T0, plan.Running(T0), started=True, ready=True)
    kept = {c["type"]: c for c in plan.pod_status(pod, unready)["conditions"]}["Ready"]
    moved = {c["type"]: c for c in plan.pod_status(pod, ready)["conditions"]}["Ready"]
    assert kept["lastTransitionTime"] == "2026-11-29T06:00:00Z"
    assert moved["lastTransitionTime"] != "2026-11-29T06:00:00Z"


def test_a_process_killed_by_a_signal_exits_as_a_container_does() -> None:
    assert plan.terminated(-9, "", T0, T1).exit_code == 137
