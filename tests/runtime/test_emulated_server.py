"""A real `imagefleet-runtime --engine emulated` process over real HTTP: the runtime is the real one,
only the pipeline call and the model load take a real card's (time-compressed) time."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from imagefleet import metrics as names
from imagefleet_runtime.__main__ import EXIT_BAD_SETTINGS
from imagefleet.cost import builtin_plan, call_seconds, load_seconds
from tests.helpers import wait_until

from .support import RunningServer, free_port, runtime_server, sample

SPEEDUP = 20.0
SDXL_ON_H100 = ("--engine", "emulated", "--gpu-class", "h100-80gb", "--model", "sdxl", "--precision", "fp16")
SDXL_H100 = (*SDXL_ON_H100, "--emulation-speedup", str(SPEEDUP))
# The narrow server runs slower, so that two requests stay queued behind a 100-step one for over a
# second: at 20x that window was about 0.3 s, which polling on a loaded machine could miss.
NARROW_SPEEDUP = 5.0
# A sleep may overrun on a busy shared machine; it never ends early.
SLEEP_SLACK_SECONDS = 0.5
RSS_LIMIT_MIB = 80
IDLE_WINDOW_SECONDS = 10.0
# Of one core. Catches a busy loop (a whole core), not a figure: the idle figure is the benchmark's
# (benchmarks/emulated_footprint.py, 0.16 %); on a loaded 2-core machine this window read 1-4 %.
IDLE_CPU_LIMIT = 0.10


def post(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/images/generations", json={"prompt": "a quay at night", **body},
                      timeout=60)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """SDXL on an emulated H100, 20x faster than real; it logs every import (-X importtime)."""
    flags = (*SDXL_H100, "--max-batch-size", "4", "--default-steps", "30")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPROFILEIMPORTTIME", "1")
        with runtime_server(tmp_path_factory.mktemp("emulated"), *flags) as server:
            yield server


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Fills up at once: room for 2 waiting requests, one image per pipeline call."""
    flags = (*SDXL_ON_H100, "--emulation-speedup", str(NARROW_SPEEDUP), "--queue-size", "2", "--max-batch-size", "1")
    with runtime_server(tmp_path_factory.mktemp("emulated-narrow"), *flags) as server:
        yield server


def test_openai_client_gets_a_png_of_the_asked_size(emulated: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{emulated.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    result = client.images.generate(model="sdxl", prompt="a quay", n=2, size="512x768",  # type: ignore[arg-type]
                                     response_format="b64_json", extra_body={"seed": 7, "steps": 4})
    assert result.data is not None and len(result.data) == 2
    colours = set()
    for item in result.data:
        assert item.b64_json is not None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        image.load()
        assert (image.format, image.size) == ("PNG", (512, 768))
        colours.add(image.convert("RGB").getpixel((0, 0)))
    assert len(colours) == 2  # seeds 7 and 8


def test_models_and_metrics_say_emulated(emulated: RunningServer) -> None:
    card = httpx.get(f"{emulated.base_url}/v1/models").json()["data"][0]
    assert (card["id"], card["engine"], card["emulated"], card["gpu_class"]) == ("sdxl", "emulated", True, "h100-80gb")
    assert emulated.metric(names.ENGINE_INFO, engine="emulated", gpu_class="h100-80gb", model="sdxl") == 1


def test_concurrent_requests_are_batched_and_take_the_emulated_time(emulated: RunningServer) -> None:
    before = emulated.metrics_text()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda seed: post(emulated, seed=seed), range(8)))
    after = emulated.metrics_text()
    assert [response.status_code for response in responses] == [200] * 8

    def delta(name: str) -> float:
        return sample(after, name) - sample(before, name)

    calls = int(delta(names.BATCH_SIZE + "_count"))
    assert delta(names.BATCH_SIZE + "_sum") == 8
    assert calls < 8, "nothing was batched"
    # k calls of 8 images in all take k one-image calls plus batch_cost per extra image, whatever the split.
    plan = builtin_plan(model="sdxl", gpu_class="h100-80gb", precision="fp16")
    one = call_seconds(plan, width=1024, height=1024, steps=30, images=1) / SPEEDUP
    expected = one * (calls + plan.class_cost.batch_cost * (8 - calls))
    took = delta(names.BATCH_DURATION_SECONDS + "_sum")
    assert expected <= took <= expected + calls * SLEEP_SLACK_SECONDS, (took, expected, calls)


def test_the_process_never_imports_torch(emulated: RunningServer) -> None:
    assert post(emulated, steps=2).status_code == 200
    imported = re.findall(r"^import time:.*\|\s+(\S+)$", emulated.log.read_text(), flags=re.MULTILINE)
    assert "fastapi" in imported and "imagefleet_runtime.emulated.engine" in imported  # the log is complete
    heavy = [module for module in imported if module.split(".")[0] in {"torch", "diffusers", "transformers"}]
    assert heavy == []


def test_idle_pod_is_small_and_quiet(emulated: RunningServer) -> None:
    """Runs after the others: the process has served requests, then sits idle."""
    assert post(emulated, n=4).status_code == 200
    pid = emulated.process.pid
    rss = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert rss is not None
    rss_mib = int(rss[1]) / 1024

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    start, began = cpu_seconds(), time.monotonic()
    time.sleep(IDLE_WINDOW_SECONDS)  # the measurement window itself, not a wait for a condition
    idle = (cpu_seconds() - start) / (time.monotonic() - began)
    print(f"emulated runtime: RSS {rss_mib:.1f} MiB, idle CPU {idle:.2%} of a core")
    assert rss_mib < RSS_LIMIT_MIB
    assert idle < IDLE_CPU_LIMIT


def test_overfull_queue_gets_429_with_retry_after(narrow: RunningServer) -> None:
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda seed: post(narrow, seed=seed), range(10)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429} and 429 in statuses, statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == names.REJECT_QUEUE_FULL
    assert narrow.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_QUEUE_FULL) == statuses.count(429)


def test_sigterm_drains_accepted_requests(narrow: RunningServer) -> None:
    """Runs last in this module: it ends the `narrow` server."""
    with ThreadPoolExecutor(3) as pool:
        accepted = [pool.submit(post, narrow, seed=seed, steps=100) for seed in range(3)]
        wait_until(lambda: narrow.metric(names.QUEUE_DEPTH) == 2, timeout=30, interval=0.02,
                   message="two requests waiting behind the one in the pipeline")
        narrow.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{narrow.base_url}/readyz").json()["status"] == "draining",
                   timeout=30, interval=0.02, message="/readyz to report draining")
        refused = post(narrow, seed=99)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == names.REJECT_DRAINING
        assert [future.result().status_code for future in accepted] == [200, 200, 200]
    assert narrow.process.wait(timeout=60) == 0


def test_a_new_pod_stays_unready_while_its_model_loads(tmp_path: Path) -> None:
    speedup = 10.0
    plan = builtin_plan(model="flux1-dev", gpu_class="h100-80gb", precision="bf16")
    loading = load_seconds(plan) / speedup
    port = free_port()
    command = [sys.executable, "-m", "imagefleet_runtime", "--engine", "emulated", "--gpu-class", "h100-80gb",
               "--model", "flux1-dev", "--precision", "bf16", "--emulation-speedup", str(speedup),
               "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with (tmp_path / "runtime.log").open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=60, interval=0.05,
                   message="the server to answer")
        assert httpx.get(f"{base}/readyz").json()["status"] == "loading"
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=60, interval=0.05,
                   message="the model to load")
        assert time.monotonic() - started >= loading
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--model", "sdxl"], "needs gpu_class"),
        (["--model", "sdxl", "--gpu-class", "v100-32gb"], "not an emulated GPU class"),
        (["--model", "sd2", "--gpu-class", "h100-80gb"], "no emulation figures"),
        (["--model", "sdxl", "--gpu-class", "t4-16gb", "--precision", "bf16"], "cannot run bf16"),
        (["--model", "sdxl", "--gpu-class", "cpu"], "no emulation figure for sdxl on cpu"),
        (["--model", "flux1-dev", "--gpu-class", "l4-24gb", "--precision", "bf16"], "does not fit"),
        (["--model", "sdxl", "--gpu-class", "h100-80gb", "--emulation-speedup", "0"], "emulation_speedup"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(flags: list[str], reason: str) -> None:
    done = subprocess.run([sys.executable, "-m", "imagefleet_runtime", "--engine", "emulated", *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_BAD_SETTINGS, done.stderr
    assert reason in done.stderr
