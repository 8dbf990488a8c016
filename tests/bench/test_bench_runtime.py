"""`imagefleet bench` against a real `tiny` runtime agrees with the runtime's own metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagefleet.demo.runtimes import RuntimeProcess, start_runtime
from imagefleet.metrics import REQUEST_DURATION_SECONDS

pytestmark = pytest.mark.slow

REQUESTS = 40
# The client's clock also runs while the request and the image cross loopback
# and the JSON is parsed, which the server's histogram does not see.
TRANSPORT_ALLOWANCE_SECONDS = 0.05


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    log = tmp_path_factory.mktemp("runtime") / "runtime.log"
    process = start_runtime(log, settings={"IMAGEFLEET_MAX_BATCH_SIZE": "4", "IMAGEFLEET_QUEUE_SIZE": "64"})
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def latency_histogram(url: str) -> dict[float, float]:
    """Cumulative counts by upper bound (`le`) of the runtime's request latency histogram."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_DURATION_SECONDS:
            continue
        for sample in family.samples:
            if sample.name == f"{REQUEST_DURATION_SECONDS}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    assert buckets, f"{REQUEST_DURATION_SECONDS} not found on {url}/metrics"
    return buckets


def quantile_bucket(cumulative: dict[float, float], q: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket `histogram_quantile(q, ...)` interpolates in."""
    bounds = sorted(cumulative)
    rank = q * cumulative[float("inf")]
    for index, upper in enumerate(bounds):
        if cumulative[upper] >= rank:
            return (bounds[index - 1] if index else 0.0), upper
    raise AssertionError("unreachable: the +Inf bucket holds every observation")


def bench(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `imagefleet bench URL --json ARGS`."""
    command = [str(Path(sys.executable).with_name("imagefleet")), "bench", url, "--json", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_bench_figures_agree_with_runtime_histogram(runtime: RuntimeProcess, tmp_path: Path) -> None:
    before = latency_histogram(runtime.metrics_url)
    plot = tmp_path / "bench.png"
    completed = bench(
        runtime.url, "--requests", str(REQUESTS), "--concurrency", "4", "--size", "64x64", "--steps", "2",
        "--plot", str(plot),
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    after = latency_histogram(runtime.metrics_url)
    delta = {le: after[le] - before.get(le, 0.0) for le in after}

    assert report["requests"] == REQUESTS
    assert report["succeeded"] == REQUESTS, report["errors"]
    assert report["images"] == REQUESTS
    assert delta[float("inf")] == REQUESTS

    lower, upper = quantile_bucket(delta, 0.95)
    p95 = report["latency_p95_seconds"]
    assert isinstance(p95, float)
    assert lower <= p95 <= upper + TRANSPORT_ALLOWANCE_SECONDS, (lower, upper, p95)
    assert plot.stat().st_size > 0


def test_bench_counts_rejections_by_status_code(runtime: RuntimeProcess) -> None:
    completed = bench(runtime.url, "--requests", "3", "--size", "64x64", "--steps", "100000")
    assert completed.returncode == 1
    assert "no request succeeded" in completed.stderr
    report = json.loads(completed.stdout)
    assert report["errors"] == {"422": 3}
    assert report["latency_p95_seconds"] is None
