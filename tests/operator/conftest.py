"""Fixtures for tests that need the operator running against the local control plane.

Reusable by other suites (import them into your conftest):
    from tests.operator.conftest import imd_crd, operator_factory, imagefleet_operator  # noqa: F401

- `imd_crd` (session): the ImageModelDeployment and ImageModelPool CRDs installed and Established.
- `operator_factory`: call `operator_factory(namespace, env={...})` to start `imagefleet run`
  watching that namespace (None: all) with extra IMAGEFLEET_* settings; all are stopped afterwards.
- `imagefleet_operator`: one operator watching the test's `namespace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.conftest import Cluster

from .harness import POOL_CRD_FILE, OperatorProcess, install_crd

OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(scope="session")
def imd_crd(cluster: Cluster) -> None:
    install_crd(cluster.api_client)
    install_crd(cluster.api_client, POOL_CRD_FILE)


@pytest.fixture
def operator_factory(
    cluster: Cluster, imd_crd: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    started: list[OperatorProcess] = []
    request.node.imagefleet_operators = started  # for the log sections of a failed test's report
    logs = tmp_path_factory.mktemp("operator")

    def start(namespace: str | None, env: Mapping[str, str] | None = None) -> OperatorProcess:
        log = logs / f"operator-{len(started)}.log"
        process = OperatorProcess(cluster.kubeconfig, namespace, log, env or {})
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def imagefleet_operator(operator_factory: OperatorFactory, namespace: str) -> OperatorProcess:
    return operator_factory(namespace)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed test's report carries the tail of each operator's log, before the control plane's logs
    (innermost wrapper: it adds its sections first), so a CI log cut short in the middle keeps it."""
    report: pytest.TestReport = yield
    if report.failed:
        for process in getattr(item, "imagefleet_operators", ()):
            report.sections.append((f"operator log {process.log_path.name}", process.log_tail(80)))
    return report
