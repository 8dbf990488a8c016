"""Warm start time and memory of the local control plane (prints its figures).

    python benchmarks/control_plane.py [--runs 3]

Each run starts `imagefleet dev up` in a fresh state directory (binaries already
built), reports seconds until the API server and every simulated node are ready,
the resident memory of each process once ready, and stops it again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from imagefleet.dev.cluster import ControlPlane


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    starts: list[float] = []
    memory: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as directory:
            plane = ControlPlane(Path(directory))
            began = time.monotonic()
            plane.up(progress=lambda _: None)
            starts.append(time.monotonic() - began)
            for name, pid in plane.pids.items():
                memory.setdefault(name, []).append(rss_mib(pid))
            plane.down()
    print(f"warm start to ready (API server + nodes), {args.runs} runs: "
          f"median {statistics.median(starts):.1f}s, min {min(starts):.1f}s, max {max(starts):.1f}s")
    print("resident memory once ready (median MiB):")
    for name, values in memory.items():
        print(f"  {name:24s} {statistics.median(values):7.1f}")
    print(f"  {'total':24s} {sum(statistics.median(v) for v in memory.values()):7.1f}")


if __name__ == "__main__":
    main()
