"""Session-wide fixtures: one local control plane per test session, a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from imagefleet.dev.cluster import ControlPlane

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Cluster:
    """The running control plane: its admin kubeconfig and an API client for it."""

    plane: ControlPlane
    kubeconfig: Path
    api_client: client.ApiClient


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    kubeconfig = plane.up(progress=lambda message: print(f"[control plane] {message}"))
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(plane, kubeconfig, api_client)
    finally:
        api_client.close()
        plane.down()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards."""
    core = client.CoreV1Api(cluster.api_client)
    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-") + "-" + uuid.uuid4().hex[:5]
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """On a failed test that used the cluster, attach the tails of the control plane's logs."""
    report: pytest.TestReport = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        plane_cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if isinstance(plane_cluster, Cluster):
            for log in plane_cluster.plane.log_files():
                if log.name == "audit.log":
                    continue
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append((f"control plane log {log.name}", "\n".join(tail)))
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the control plane is marked `cluster` (select with -m). The runtime
    image's tests run last: CI builds that image in the background meanwhile (.ci/run)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: item.get_closest_marker("runtime_image") is not None)
