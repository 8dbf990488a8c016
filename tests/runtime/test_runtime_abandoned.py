"""A request whose client hung up is dropped before its batch runs, and counted: the real runtime
process (tiny model on the CPU), one request at a time, a second one waiting behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagefleet import metrics as names
from tests.helpers import wait_until
from tests.runtime.support import RunningServer, runtime_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("abandoned"), "--default-width", "64", "--default-height", "64",
                        "--max-batch-size", "1", "--queue-size", "8") as server:
        yield server


def test_a_waiting_job_whose_client_left_never_runs(one_at_a_time: RunningServer) -> None:
    server = one_at_a_time
    before = server.metric(names.IMAGES_GENERATED_TOTAL)
    calls = server.metric(names.BATCH_SIZE + "_count")
    long = {"prompt": "a lighthouse", "steps": 100}  # seconds on the CPU: the second one waits behind it
    first: list[int] = []
    runner = threading.Thread(target=lambda: first.append(httpx.post(
        f"{server.base_url}/v1/images/generations", json=long, timeout=300).status_code))
    runner.start()
    wait_until(lambda: server.metric(names.REQUESTS_RUNNING) == 1, timeout=30, interval=0.02,
               message="the first request running")
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while its request waits
        httpx.post(f"{server.base_url}/v1/images/generations", json=long, timeout=1.0)
    wait_until(lambda: server.metric(names.REQUESTS_ABANDONED_TOTAL) == 1, timeout=10, interval=0.05,
               message="the abandoned job counted")
    assert server.metric(names.QUEUE_DEPTH) == 0  # out of the queue at once, not when its turn came
    runner.join(300)
    assert first == [200]
    # Only the first request's image was made: the abandoned one never reached the pipeline.
    wait_until(lambda: server.metric(names.IMAGES_GENERATED_TOTAL) == before + 1, timeout=10, interval=0.05,
               message="the first image counted")
    assert server.metric(names.BATCH_SIZE + "_count") == calls + 1
