"""A control plane of the fault tests' own (they restart its components), with a small
fleet: one CPU node and four L4 nodes of one GPU each, a Prometheus that discovers its pods,
and the ImageModelDeployment CRD."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from imagefleet.dev.cluster import ControlPlane
from imagefleet.dev.fleet import Fleet
from imagefleet.dev.prometheus import LocalPrometheus
from tests.conftest import LOG_TAIL_LINES, Cluster
from tests.operator.harness import OperatorProcess, install_crd

FLEET = Fleet.model_validate(
    {
        "classes": {
            "cpu": {"nodes": 1},
            "l4-24gb": {"nodes": 4, "gpusPerNode": 1, "product": "NVIDIA-L4", "memoryMiB": 23034},
        }
    }
)
AUTOSCALE_INTERVAL_SECONDS = 2.0
StartOperator = Callable[[], OperatorProcess]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    control_plane = ControlPlane(tmp_path_factory.mktemp("fault-plane"), fleet=FLEET)
    kubeconfig = control_plane.up(progress=lambda message: print(f"[fault plane] {message}"))
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        install_crd(api_client)
        yield Cluster(control_plane, kubeconfig, api_client)
    finally:
        api_client.close()
        control_plane.down()


@pytest.fixture(scope="module")
def prometheus(plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    server = LocalPrometheus(
        tmp_path_factory.mktemp("fault-prometheus"), scrape_interval="1s",
        pods_kubeconfig=plane.plane.prometheus_kubeconfig,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_namespace(plane: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(plane.api_client)
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-") + "-" + uuid.uuid4().hex[:5]
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def start_operator(
    plane: Cluster, prometheus: LocalPrometheus, fault_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartOperator]:
    """Start `imagefleet run` on the test's namespace (again, after a kill): each with its own log."""
    started: list[OperatorProcess] = []
    request.node.imagefleet_operators = started

    def start() -> OperatorProcess:
        env = {
            "IMAGEFLEET_PROMETHEUS_URL": prometheus.url,
            "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": str(AUTOSCALE_INTERVAL_SECONDS),
        }
        process = OperatorProcess(plane.kubeconfig, fault_namespace, tmp_path / f"operator-{len(started)}.log", env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed fault test's report carries the tails of its operators' and components' logs."""
    report: pytest.TestReport = yield
    if report.failed:
        for process in getattr(item, "imagefleet_operators", ()):
            report.sections.append((f"operator log {process.log_path.name}", process.log_tail(80)))
        fault_plane = getattr(item, "funcargs", {}).get("plane")
        if isinstance(fault_plane, Cluster):
            for log in fault_plane.plane.log_files():
                if log.name != "audit.log":
                    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                    report.sections.append((f"fault plane log {log.name}", "\n".join(tail)))
    return report
