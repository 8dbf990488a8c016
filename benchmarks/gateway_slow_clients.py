"""What slow clients cost the gateway: N connections that each send a generation request's
headers and the first byte of a body they never finish.

A gateway process (benchmarks/gateway_overhead.py's, its fleet given on the command line, no API
keys) is started; N such connections are opened one after another and held for 5 s; then prints
how many the gateway answered 503 (and closed), its resident memory idle and at its peak, and how
long another client's request took meanwhile. With `--baseline DIR` (the `operator/` directory of
other code) the same is run against a gateway of that code first, for a before and after.

Loopback only; no pod is needed (the requests never get a body). Nothing is asserted.

    python benchmarks/gateway_slow_clients.py [--connections 10000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gateway_overhead import free_port, gateway, rss_mib  # noqa: E402

HOLD_SECONDS = 5.0
SLOW_REQUEST = (b"POST /v1/images/generations HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                b"content-length: 1000\r\n\r\n{")


def attack(url: str, pid: int, count: int) -> str:
    """Open `count` slow requests against the gateway at `url`; a line of what it cost."""
    host, port = url.split("//")[1].rsplit(":", 1)
    idle = peak = rss_mib(pid)
    connections: list[socket.socket] = []
    started = time.monotonic()
    try:
        for index in range(count):
            connection = socket.create_connection((host, int(port)), timeout=10)
            connection.sendall(SLOW_REQUEST)
            connection.setblocking(False)
            connections.append(connection)
            if index % 500 == 0:
                peak = max(peak, rss_mib(pid))
        opened = time.monotonic() - started
        until = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < until:
            peak = max(peak, rss_mib(pid))
            time.sleep(0.05)
        refused = sum(_answered_503(connection) for connection in connections)
        asked = time.monotonic()
        other = httpx.post(f"{url}/v1/images/generations", json={"model": "none", "prompt": "x"}, timeout=30)
        other_ms = 1000 * (time.monotonic() - asked)
    finally:
        for connection in connections:
            connection.close()
    return (f"{count} slow connections opened in {opened:.1f} s: {refused} answered 503, {count - refused} held; "
            f"RSS {idle:.0f} MiB idle, {peak:.0f} MiB at peak; another client's request: {other.status_code} in "
            f"{other_ms:.0f} ms")


def _answered_503(connection: socket.socket) -> bool:
    try:
        return connection.recv(64).startswith(b"HTTP/1.1 503")
    except (BlockingIOError, ConnectionResetError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--baseline", help="operator/ directory of other code to run first")
    args = parser.parse_args()
    runs = ([("baseline", args.baseline)] if args.baseline else []) + [("this code", None)]
    for name, code in runs:
        with ExitStack() as stack:
            url, _, pid = gateway(stack, free_port(), ["cold="], code=code)
            print(f"{name}: {attack(url, pid, args.connections)}", flush=True)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
