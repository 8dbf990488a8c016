"""Throughput of the runtime with the `tiny` model on CPU, side by side in one run, with its two goals:

1. the server reaches >= 90 % of the raw pipeline's images/min at the same batch size (64x64 and 128x128);
2. batching on is never below batching off, at every concurrency (1..16 by default).

For each image size, two servers run at once (batching off: max batch 1; on: max batch B). For each
concurrency, closed-loop clients drive off, then the raw pipeline runs at batch 1, then clients drive
on, then the raw pipeline runs at on's mean batch size (rounded; from the server's /metrics), for as
many images each. That cycle repeats (--repeats) and every ratio is taken within one cycle, then the
median over cycles is printed: on a shared machine, load moves within a minute, and interleaving
lets it hit server and raw alike. Prints a table, the goals met or missed, and the load average;
asserts nothing.

    python benchmarks/runtime_throughput.py [--sizes 64 128] [--concurrency 1 2 4 8 16] [--steps 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from imagefleet import metrics as names
from imagefleet_runtime.models.builtin import build_tiny

PROMPT = "a lighthouse at dusk"


@dataclass(frozen=True)
class Point:
    images_per_minute: float
    p50: float
    p95: float
    mean_batch: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    metrics_url: str


@contextmanager
def server(max_batch_size: int, threads: int, *flags: str) -> Iterator[Server]:
    """A runtime (tiny on CPU unless `flags` say otherwise: a later flag wins), ready when yielded."""
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "imagefleet_runtime", "--model", "tiny", "--device", "cpu",
               "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
               "--max-batch-size", str(max_batch_size),
               "--queue-size", "256", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"runtime exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("runtime not ready after 300 s")
            time.sleep(0.2)
        yield Server(url, f"http://127.0.0.1:{metrics_port}")
    finally:
        process.send_signal(signal.SIGTERM)  # drains: instant unless a run was interrupted
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def batch_totals(runtime: Server) -> tuple[float, float]:
    """(requests, pipeline calls) so far, from the batch size histogram."""
    text = httpx.get(f"{runtime.metrics_url}/metrics").text
    values = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    return values[names.BATCH_SIZE + "_sum"], values[names.BATCH_SIZE + "_count"]


async def drive(runtime: Server, size: int, steps: int, concurrency: int, requests: int) -> Point:
    """`concurrency` clients, each sending its next request when the last one returns."""
    latencies: list[float] = []
    seeds = iter(range(requests))
    body = {"prompt": PROMPT, "size": f"{size}x{size}", "steps": steps}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=runtime.url, timeout=600, limits=limits) as client:
        async def client_loop() -> None:
            for seed in seeds:
                started = time.perf_counter()
                response = await client.post("/v1/images/generations", json={**body, "seed": seed})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        before = batch_totals(runtime)
        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = batch_totals(runtime)
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return Point(len(latencies) / elapsed * 60, statistics.median(latencies), cuts[18], mean_batch)


def raw_images_per_minute(pipeline: object, size: int, steps: int, batch: int, images: int) -> float:
    """The pipeline called directly, `batch` images per call, enough calls for about `images` images."""
    calls = max(2, round(images / batch))

    def call(seed: int) -> None:
        generators = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        with torch.inference_mode():
            pipeline(prompt=[PROMPT] * batch, num_inference_steps=steps, guidance_scale=7.0,  # type: ignore[operator]
                     width=size, height=size, generator=generators)

    call(0)  # warm-up
    started = time.perf_counter()
    for index in range(calls):
        call(index * batch)
    return calls * batch / (time.perf_counter() - started) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=8, help="max batch size when batching is on")
    parser.add_argument("--rounds", type=int, default=1, help="requests per point = rounds x max(concurrency, 16)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved cycles per point; medians printed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, server and raw (1: oversubscribed OpenMP threads crawl on a shared machine)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    pipeline = build_tiny()
    pipeline.set_progress_bar_config(disable=True)
    print(f"tiny model, CPU, torch threads {args.threads}, {args.steps} steps, guidance 7.0 (CFG doubles the batch), "
          f"batching on = max batch {args.max_batch_size}; img/min of served images; "
          f"medians of {args.repeats} interleaved cycles",
          flush=True)
    header = (f"{'size':>7} {'conc':>4} {'req':>4} | {'off':>6} {'p95 s':>6} {'raw b1':>6} {'srv/raw':>7} | "
              f"{'on':>6} {'p95 s':>6} {'batch':>5} {'raw bN':>6} {'srv/raw':>7} | {'on/off':>6}")
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(header)
    print("-" * len(header), flush=True)
    ratios_to_raw: list[float] = []
    on_over_off: list[float] = []
    for size in args.sizes:
        largest = ("--max-width", str(size), "--max-height", str(size))  # the warm-up runs a full call at it
        with (server(1, args.threads, *largest) as off_server,
              server(args.max_batch_size, args.threads, *largest) as on_server):
            for concurrency in args.concurrency:
                requests = args.rounds * max(concurrency, 16)
                cycles = []
                for _ in range(args.repeats):
                    off = asyncio.run(drive(off_server, size, args.steps, concurrency, requests))
                    raw_off = raw_images_per_minute(pipeline, size, args.steps, 1, requests)
                    on = asyncio.run(drive(on_server, size, args.steps, concurrency, requests))
                    raw_on = raw_images_per_minute(pipeline, size, args.steps, max(1, round(on.mean_batch)), requests)
                    cycles.append((off, raw_off, on, raw_on))
                off_ratio = statistics.median(c[0].images_per_minute / c[1] for c in cycles)
                on_ratio = statistics.median(c[2].images_per_minute / c[3] for c in cycles)
                on_off = statistics.median(c[2].images_per_minute / c[0].images_per_minute for c in cycles)
                ratios_to_raw += [off_ratio, on_ratio]
                on_over_off.append(on_off)

                def median(pick: Callable[[tuple[Point, float, Point, float]], float]) -> float:
                    return statistics.median(pick(c) for c in cycles)

                print(f"{size:>3}x{size:<3} {concurrency:>4} {requests:>4} | "
                      f"{median(lambda c: c[0].images_per_minute):>6.1f} {median(lambda c: c[0].p95):>6.2f} "
                      f"{median(lambda c: c[1]):>6.1f} {off_ratio:>7.0%} | "
                      f"{median(lambda c: c[2].images_per_minute):>6.1f} {median(lambda c: c[2].p95):>6.2f} "
                      f"{median(lambda c: c[2].mean_batch):>5.1f} {median(lambda c: c[3]):>6.1f} "
                      f"{on_ratio:>7.0%} | {on_off:>6.0%}",
                      flush=True)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    lowest_raw, lowest_on = min(ratios_to_raw), min(on_over_off)
    print(f"goal server >= 90% of raw at the same batch size: lowest {lowest_raw:.0%} "
          f"({'met' if lowest_raw >= 0.9 else 'MISSED'})")
    print(f"goal batching on never below off: lowest on/off {lowest_on:.0%} "
          f"({'met' if lowest_on >= 1.0 else 'MISSED'})")


if __name__ == "__main__":
    main()
