"""A shared tiny-model runtime for the API tests (started once, torn down at the end)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import RunningServer, runtime_server

# Requests that wait while a batch runs share the next one, up to 4 images; sizes up to 96x96 (the
# warm-up runs 4 images at that size: keep it small on CPU).
SHARED_FLAGS = ("--default-steps", "3", "--max-batch-size", "4", "--queue-size", "64",
                "--max-width", "96", "--max-height", "96")


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("runtime"), *SHARED_FLAGS) as server:
        yield server
