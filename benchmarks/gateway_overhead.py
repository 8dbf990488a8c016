"""What `imagefleet gateway` costs and what its picking buys, on loopback, in one run.

1. Overhead: emulated runtime pods (`--engine emulated`, h100-80gb figures, 64x64 images) and a gateway
   in front of them (its own process, its fleet given on the command line instead of watched). An
   open-loop client sends requests at a fixed rate, alternating direct-to-pod and through the gateway,
   so both paths see the same machine at the same time; prints p50/p99 of each and the difference,
   and the gateway's CPU (cores) and resident memory during the run.
2. Held requests: a resource with no pod; N requests at once are held by the gateway; prints its
   resident memory once all are held (then the client disconnects, which releases them).
3. Picking: two groups of two emulated pods, one pod of each slowed down 4x; one gateway picks
   least-loaded, a second one round-robin; requests alternate between them; prints each p50/p95.

With `--baseline DIR` (the `operator/` directory of another checkout, e.g. the code before a
change), part 1 also runs a gateway of that code on the same pods, and the client alternates
between the three paths: before and after, side by side in one run.

Every pod is the real runtime with the emulated engine (figures: emulated). Nothing is asserted.

    python benchmarks/gateway_overhead.py [--rate 200] [--seconds 10] [--held 1000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from imagefleet import metrics as names

PROMPT = "a lighthouse at dusk"
BODY = {"prompt": PROMPT, "size": "64x64"}
GPU_CLASS = "h100-80gb"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ----------------------------------------------------------------------------------


def wait_ready(url: str, path: str = "/readyz", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} not ready after {timeout:.0f}s")


@contextmanager
def process(command: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(url)
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def pod(stack: ExitStack, address: str, speedup: float) -> str:
    """An emulated runtime pod at a loopback address; its base URL."""
    url = f"http://{address}:8000"
    stack.enter_context(process([
        sys.executable, "-m", "imagefleet_runtime", "--engine", "emulated", "--gpu-class", GPU_CLASS,
        "--model", "sdxl", "--precision", "fp16", "--default-steps", "4", "--max-batch-size", "8",
        "--queue-size", "256", "--emulation-speedup", str(speedup),
        "--host", address, "--port", "8000",
    ], url))
    return url


def gateway(stack: ExitStack, port: int, groups: list[str], picker: str = "least-loaded",
            code: str | None = None) -> tuple[str, str, int]:
    """A gateway process serving `groups` ("name=url,url"; no URL: a resource at zero); (URL, metrics URL, pid).
    `code`: an `operator/` directory whose imagefleet it runs (default: this one's)."""
    url, metrics_port = f"http://127.0.0.1:{port}", free_port()
    env = None if code is None else {**os.environ, "PYTHONPATH": os.pathsep.join(
        [code, *os.environ.get("PYTHONPATH", "").split(os.pathsep)])}
    child = stack.enter_context(process(
        [sys.executable, __file__, "serve", "--port", str(port), "--metrics-port", str(metrics_port),
         "--picker", picker, *groups], url, env))
    return url, f"http://127.0.0.1:{metrics_port}", child.pid


def serve(port: int, metrics_port: int, picker_name: str, groups: list[str]) -> None:
    """The gateway app with a fixed fleet (the benchmark has no API server), on the CLI's server settings.
    A `--baseline` may be code from before the gateway had a metrics port (its /metrics is then on the main
    port) and before the shared modules these import from: the older places are tried second."""
    import uvicorn

    from imagefleet.gateway import app as gateway_app
    try:
        from imagefleet.http_limits import HeaderTimeoutProtocol
    except ImportError:
        from imagefleet.gateway.command import HeaderTimeoutProtocol  # type: ignore[attr-defined,no-redef]
    try:
        from imagefleet.servers import CompanionServer
        from imagefleet.servers import serve as serve_both
    except ImportError:
        from imagefleet.gateway.command import CompanionServer  # type: ignore[attr-defined,no-redef]
        from imagefleet.gateway.command import serve as serve_both  # type: ignore[attr-defined,no-redef]
    from imagefleet.gateway.picking import Picker, RoundRobinPicker
    from imagefleet.gateway.service import Gateway, Settings

    service = Gateway(Settings(hold_timeout_seconds=600, max_held=100_000),
                      picker=RoundRobinPicker() if picker_name == "round-robin" else Picker())
    for index, group in enumerate(groups):
        name, _, urls = group.partition("=")
        service.fleet.apply_resource("ADDED", {"metadata": {"namespace": "bench", "name": name}, "spec": {
            "model": {"name": "sdxl"}, "gpuClass": GPU_CLASS, "tier": "standard"}})
        for number, pod_url in enumerate(u for u in urls.split(",") if u):
            host, pod_port = pod_url.split("//")[1].rsplit(":", 1)
            service.fleet.apply_slice("ADDED", {
                "metadata": {"namespace": "bench", "name": f"{name}-{index}-{number}",
                             "labels": {"kubernetes.io/service-name": name}},
                "ports": [{"name": "http", "port": int(pod_port)}],
                "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]})
    main = uvicorn.Server(uvicorn.Config(gateway_app.create_app(service), host="127.0.0.1", port=port,
                                         http=HeaderTimeoutProtocol, log_level="warning", timeout_keep_alive=10))
    if not hasattr(gateway_app, "create_metrics_app"):
        asyncio.run(main.serve())
        return
    metrics = CompanionServer(uvicorn.Config(gateway_app.create_metrics_app(service), host="127.0.0.1",
                                             port=metrics_port, log_level="warning", lifespan="off"))
    asyncio.run(serve_both(main, metrics))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 2**20


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


# -- load -----------------------------------------------------------------------------------------


@dataclass
class Path_:
    """One way to the pods and the latencies seen on it."""

    name: str
    urls: list[str]
    body: dict[str, str]
    latencies: list[float]
    errors: int = 0
    turn: int = 0

    def next_url(self) -> str:
        self.turn += 1
        return self.urls[self.turn % len(self.urls)] + "/v1/images/generations"


async def open_loop(paths: list[Path_], rate: float, seconds: float) -> float:
    """Send `rate` requests/s on each path for `seconds` (alternating paths); the achieved total rate."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one(path: Path_) -> None:
            started = time.perf_counter()
            try:
                response = await client.post(path.next_url(), json=path.body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                path.latencies.append(time.perf_counter() - started)
            else:
                path.errors += 1

        total = int(rate * seconds) * len(paths)
        interval = 1.0 / (rate * len(paths))
        tasks = []
        began = time.perf_counter()
        for index in range(total):
            delay = began + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(paths[index % len(paths)])))
        sent = time.perf_counter() - began
        await asyncio.gather(*tasks)
    return total / sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def hold(url: str, metrics_url: str, count: int, pid: int) -> tuple[int, float]:
    """Open `count` requests to a resource at zero; (held seen by the gateway, its RSS then in MiB)."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        pending = [asyncio.ensure_future(client.post(url + "/v1/images/generations",
                                                     json={**BODY, "model": "cold"})) for _ in range(count)]
        deadline = time.monotonic() + 60
        held = 0.0
        while time.monotonic() < deadline:
            held = await asyncio.to_thread(metric, metrics_url, names.GATEWAY_HELD_REQUESTS)
            if held >= count:
                break
            await asyncio.sleep(0.2)
        memory = rss_mib(pid)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return int(held), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve_args = sub.add_parser("serve")
    serve_args.add_argument("--port", type=int, required=True)
    serve_args.add_argument("--metrics-port", type=int, required=True)
    serve_args.add_argument("--picker", choices=["least-loaded", "round-robin"], default="least-loaded")
    serve_args.add_argument("groups", nargs="*")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s on each path")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--picking-rate", type=float, default=10.0, help="requests/s on each gateway (picking)")
    parser.add_argument("--baseline", help="operator/ directory of other code to compare in part 1")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.metrics_port, args.picker, args.groups)
        return

    print(f"pods: imagefleet-runtime --engine emulated ({GPU_CLASS} figures, sdxl fp16, 64x64, 4 steps): EMULATED")
    with ExitStack() as stack:
        pods = [pod(stack, f"127.100.1.{i}", speedup=1.0) for i in (1, 2)]
        gw_url, gw_metrics, gw_pid = gateway(stack, free_port(), [f"sdxl={','.join(pods)}", "cold="])
        for _ in range(20):  # warm both paths' connections
            httpx.post(gw_url + "/v1/images/generations", json={**BODY, "model": "sdxl"}, timeout=30)
        direct = Path_("direct to pod", pods, BODY, [])
        gateways = {"through gateway": (gw_url, gw_pid)}  # path name -> (URL, pid)
        if args.baseline:
            base_url, _, base_pid = gateway(stack, free_port(), [f"sdxl={','.join(pods)}"], code=args.baseline)
            for _ in range(20):
                httpx.post(base_url + "/v1/images/generations", json={**BODY, "model": "sdxl"}, timeout=30)
            gateways["baseline gateway"] = (base_url, base_pid)
        vias = [Path_(name, [url], {**BODY, "model": "sdxl"}, []) for name, (url, _) in gateways.items()]
        before = {name: (cpu_seconds(pid), time.monotonic()) for name, (_, pid) in gateways.items()}
        achieved = asyncio.run(open_loop([direct, *vias], args.rate, args.seconds))
        print(f"\n1. overhead at {args.rate:.0f} req/s per path for {args.seconds:.0f}s "
              f"(achieved {achieved:.0f} req/s in total, {os.cpu_count()} cores shared by client, gateways, pods)")
        print(f"   {'path':<16} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for path in (direct, *vias):
            print(f"   {path.name:<16} {len(path.latencies):>6} {path.errors:>6} "
                  f"{1000 * percentile(path.latencies, 0.50):>8.2f} {1000 * percentile(path.latencies, 0.99):>8.2f}")
        for via in vias:
            cpu, wall = before[via.name]
            pid = gateways[via.name][1]
            cores = (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)
            print(f"   {via.name}: added p50 "
                  f"{1000 * (percentile(via.latencies, .5) - percentile(direct.latencies, .5)):.2f} ms, p99 "
                  f"{1000 * (percentile(via.latencies, .99) - percentile(direct.latencies, .99)):.2f} ms; "
                  f"{cores:.2f} cores, RSS {rss_mib(pid):.0f} MiB")
        held, held_memory = asyncio.run(hold(gw_url, gw_metrics, args.held, gw_pid))
        print(f"\n2. held requests: {held} held at once (asked {args.held}); gateway RSS {held_memory:.0f} MiB")

        fast_a, slow_a = pod(stack, "127.100.2.1", 1.0), pod(stack, "127.100.2.2", 0.25)
        fast_b, slow_b = pod(stack, "127.100.3.1", 1.0), pod(stack, "127.100.3.2", 0.25)
        least, _, _ = gateway(stack, free_port(), [f"sdxl={fast_a},{slow_a}"], "least-loaded")
        rr, _, _ = gateway(stack, free_port(), [f"sdxl={fast_b},{slow_b}"], "round-robin")
        body = {"prompt": PROMPT, "size": "512x512", "model": "sdxl"}
        picked = [Path_("least-loaded", [least], body, []), Path_("round-robin", [rr], body, [])]
        asyncio.run(open_loop(picked, args.picking_rate, args.seconds))
        print(f"\n3. picking: 2 pods per gateway, one slowed 4x; 512x512, {args.picking_rate:.0f} req/s per gateway "
              f"for {args.seconds:.0f}s, side by side (EMULATED pods)")
        print(f"   {'picker':<14} {'ok':>6} {'errors':>6} {'p50 s':>7} {'p95 s':>7}")
        for path in picked:
            print(f"   {path.name:<14} {len(path.latencies):>6} {path.errors:>6} "
                  f"{statistics.median(path.latencies) if path.latencies else float('nan'):>7.3f} "
                  f"{percentile(path.latencies, 0.95):>7.3f}")
    print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
