"""Real runtime processes (tiny model, CPU) on loopback for the gateway's HTTP tests, started once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime.support import RunningServer, runtime_server

FAST = ("--default-steps", "2", "--default-width", "64", "--default-height", "64")


@pytest.fixture(scope="session")
def bulk_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("bulk"), *FAST, "--max-batch-size", "4",
                        "--queue-size", "64") as server:
        yield server


@pytest.fixture(scope="session")
def premium_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One request at a time and a queue of one: easy to saturate."""
    with runtime_server(tmp_path_factory.mktemp("premium"), *FAST, "--max-batch-size", "1",
                        "--queue-size", "1") as server:
        yield server
