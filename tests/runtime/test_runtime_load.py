"""A real runtime process under load: no lost requests, metrics that follow, 429s, SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagefleet import metrics as names
from tests.helpers import wait_until

from .support import RunningServer, runtime_server, sample

PROMPT = "a harbour in the rain"


def post(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/images/generations", json={"prompt": PROMPT, **body}, timeout=120)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that fills up at once: room for 2 waiting requests, one image per pipeline call."""
    flags = ("--queue-size", "2", "--max-batch-size", "1", "--default-steps", "10")
    with runtime_server(tmp_path_factory.mktemp("narrow"), *flags) as server:
        yield server


def test_concurrent_load_every_request_answered_and_metrics_follow(runtime: RunningServer) -> None:
    before = runtime.metrics_text()
    bodies: list[dict[str, Any]] = [{"seed": index, "steps": 3, "n": 1 + index % 4 // 3, "size": "32x48" if index % 3 == 0 else "64x64"}
              for index in range(16)]
    depths: list[float] = []
    done = threading.Event()

    def watch_queue() -> None:
        while not done.is_set():
            depths.append(runtime.metric(names.QUEUE_DEPTH))

    watcher = threading.Thread(target=watch_queue)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(lambda body: post(runtime, **body), bodies))
    finally:
        done.set()
        watcher.join()
    after = runtime.metrics_text()

    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        assert [item["seed"] for item in response.json()["data"]] == [body["seed"] + i for i in range(body["n"])]
    images = sum(body["n"] for body in bodies)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert max(depths) >= 2, f"queue depth never rose: {sorted(set(depths))}"
    assert runtime.metric(names.QUEUE_DEPTH) == 0
    assert delta(names.REQUEST_DURATION_SECONDS + "_count") == len(bodies)
    assert delta(names.IMAGES_GENERATED_TOTAL) == images
    assert delta(names.BATCH_SIZE + "_sum") == len(bodies)
    assert delta(names.BATCH_DURATION_SECONDS + "_count") == delta(names.BATCH_SIZE + "_count")
    assert delta(names.BATCH_SIZE + "_count") < len(bodies), "nothing was batched"
    for reason in (names.REJECT_QUEUE_FULL, names.REJECT_OOM, names.REJECT_DRAINING):
        assert delta(names.REQUESTS_REJECTED_TOTAL, reason=reason) == 0


def test_metrics_pass_promtool(runtime: RunningServer, tmp_path: Path) -> None:
    assert post(runtime, steps=2).status_code == 200
    text = runtime.metrics_text()
    for name in (names.QUEUE_DEPTH, names.QUEUE_CAPACITY, names.REQUEST_DURATION_SECONDS, names.BATCH_DURATION_SECONDS,
                 names.BATCH_SIZE, names.IMAGES_GENERATED_TOTAL, names.REQUESTS_REJECTED_TOTAL, names.MODEL_READY):
        assert f"# TYPE {name.removesuffix('_total')}" in text
    assert f'{names.REQUEST_DURATION_SECONDS}_bucket{{le="600.0"}}' in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == "" and checked.stderr.decode().strip() == ""


def test_overfull_queue_gets_429_with_retry_after_and_loses_nothing(narrow: RunningServer) -> None:
    before = narrow.metrics_text()
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda seed: post(narrow, seed=seed), range(10)))
    after = narrow.metrics_text()
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429}, statuses
    refused = [response for response in responses if response.status_code == 429]
    served = [response for response in responses if response.status_code == 200]
    assert refused, "ten concurrent requests never overfilled a queue of two"
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == names.REJECT_QUEUE_FULL
    assert all(len(response.json()["data"]) == 1 for response in served)
    rejected = sample(after, names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_QUEUE_FULL) - sample(
        before, names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_QUEUE_FULL
    )
    generated = sample(after, names.IMAGES_GENERATED_TOTAL) - sample(before, names.IMAGES_GENERATED_TOTAL)
    assert rejected == len(refused)
    assert generated == len(served)
    assert sample(after, names.QUEUE_DEPTH) == 0


def test_sigterm_drains_queue_then_exits(narrow: RunningServer) -> None:
    """Runs last in this module: it ends the `narrow` server."""
    with ThreadPoolExecutor(3) as pool:
        accepted = [pool.submit(post, narrow, seed=seed, steps=20) for seed in range(3)]
        wait_until(lambda: narrow.metric(names.QUEUE_DEPTH) == 2, timeout=60, interval=0.05,
                   message="two requests waiting behind the one in the pipeline")
        narrow.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{narrow.base_url}/readyz").json()["status"] == "draining",
                   timeout=30, interval=0.02, message="/readyz to report draining")
        assert not all(future.done() for future in accepted), "the queue emptied before the drain could be seen"
        refused = post(narrow, seed=99, steps=2)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == names.REJECT_DRAINING
        assert [future.result().status_code for future in accepted] == [200, 200, 200]
    assert narrow.process.wait(timeout=60) == 0
    assert "drained" in narrow.log.read_text()
