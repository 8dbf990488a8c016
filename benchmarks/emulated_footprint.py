"""Memory and idle CPU of emulated runtime pods (`imagefleet-runtime --engine emulated`).

Starts N emulated runtimes, each on its own loopback IP as the node agent does (127.100.0.x:8000),
cycling through GPU classes and models; waits until all are ready, sends each one request, then
reads every process's RSS, PSS (shared pages split between the processes that map them) and
private memory from /proc, and its CPU time over an idle window. Prints one line per process and
the totals; asserts nothing.

    python benchmarks/emulated_footprint.py [--pods 25] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PLACEMENTS = (
    ("h100-80gb", "sdxl", "fp16"),
    ("a100-80gb", "sd15", "fp16"),
    ("l4-24gb", "sdxl", "fp16"),
    ("t4-16gb", "sd15", "fp16"),
    ("h200-141gb", "flux1-dev", "bf16"),
    ("cpu", "tiny", "fp32"),
)
PORT = 8000


@dataclass(frozen=True)
class Footprint:
    rss_kib: int
    pss_kib: int
    private_kib: int


def footprint(pid: int) -> Footprint:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()

    def field(name: str) -> int:
        return sum(int(value) for value in re.findall(rf"^{name}:\s+(\d+) kB", rollup, flags=re.MULTILINE))

    return Footprint(field("Rss"), field("Pss"), field("Private_Clean") + field("Private_Dirty"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_available_kib() -> int:
    return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=25)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()

    available_before = mem_available_kib()
    pods: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    for index, (gpu_class, model, precision) in zip(range(args.pods), itertools.cycle(PLACEMENTS), strict=False):
        host = f"127.100.0.{index + 2}"
        command = [sys.executable, "-m", "imagefleet_runtime", "--engine", "emulated", "--gpu-class", gpu_class,
                   "--model", model, "--precision", precision, "--emulation-speedup", "50",
                   "--host", host, "--port", str(PORT)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pods.append((host, f"{model} on {gpu_class}", process))
    try:
        deadline = time.monotonic() + 600
        for host, _, process in pods:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{host} exited with {process.returncode}")
                try:
                    if httpx.get(f"http://{host}:{PORT}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{host} not ready after 600 s")
                time.sleep(0.2)
        for host, _, _ in pods:
            response = httpx.post(f"http://{host}:{PORT}/v1/images/generations", json={"prompt": "x", "steps": 2},
                                  timeout=120)
            response.raise_for_status()
        before = {process.pid: cpu_seconds(process.pid) for _, _, process in pods}
        started = time.monotonic()
        time.sleep(args.idle_seconds)  # the idle window being measured
        window = time.monotonic() - started
        total = Footprint(0, 0, 0)
        idle_total = 0.0
        print(f"{'pod':<18} {'serves':<24} {'RSS MiB':>8} {'PSS MiB':>8} {'private MiB':>12} {'idle CPU':>9}")
        for host, serves, process in pods:
            used = footprint(process.pid)
            idle = (cpu_seconds(process.pid) - before[process.pid]) / window
            idle_total += idle
            total = Footprint(total.rss_kib + used.rss_kib, total.pss_kib + used.pss_kib,
                              total.private_kib + used.private_kib)
            print(f"{host:<18} {serves:<24} {used.rss_kib / 1024:>8.1f} {used.pss_kib / 1024:>8.1f} "
                  f"{used.private_kib / 1024:>12.1f} {idle:>9.2%}")
        count = len(pods)
        print(f"\n{count} emulated pods, idle window {window:.0f} s (emulated: no GPU work is done)")
        print(f"  total RSS {total.rss_kib / 1024:.0f} MiB, total PSS {total.pss_kib / 1024:.0f} MiB, "
              f"total private {total.private_kib / 1024:.0f} MiB")
        print(f"  per pod: PSS {total.pss_kib / 1024 / count:.1f} MiB, "
              f"private {total.private_kib / 1024 / count:.1f} MiB, idle CPU {idle_total / count:.3%} of a core")
        print(f"  MemAvailable dropped by {(available_before - mem_available_kib()) / 1024:.0f} MiB")
        print(f"  idle CPU of all pods together: {idle_total:.2%} of a core; load average {os.getloadavg()}")
    finally:
        for _, _, process in pods:
            process.send_signal(signal.SIGTERM)
        for _, _, process in pods:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
