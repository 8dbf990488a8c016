"""Request bodies above the bound get 413 before they are read whole: concurrent oversized bodies,
declared or chunked, leave the server's memory flat (a real process, over real sockets)."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from imagefleet import metrics as names

from .support import RunningServer, runtime_server

EMULATED = ("--engine", "emulated", "--gpu-class", "h100-80gb", "--model", "sd15", "--precision", "fp16",
            "--emulation-speedup", "100", "--max-request-bytes", "65536")
CLIENTS = 8
BODY_BYTES = 64 * 1024 * 1024  # per client: 512 MiB offered in all
CHUNK = b"x" * (256 * 1024)
RSS_GROWTH_LIMIT_MIB = 32


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with runtime_server(tmp_path_factory.mktemp("bounded"), *EMULATED) as server:
        yield server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_oversized(base_url: str, *, chunked: bool) -> tuple[int, dict[str, object]]:
    """Offer a BODY_BYTES body until the server answers; return its status and JSON body."""
    host, port = base_url.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY_BYTES}"
    head = (f"POST /v1/images/generations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n").encode()
    piece = (f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n") if chunked else CHUNK
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < BODY_BYTES:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(piece)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_concurrent_oversized_bodies_get_413_and_memory_stays_flat(bounded: RunningServer, chunked: bool) -> None:
    pid = bounded.process.pid
    before = rss_mib(pid)
    rejected_before = bounded.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID)
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(lambda _: send_oversized(bounded.base_url, chunked=chunked), range(CLIENTS)))
    after = rss_mib(pid)
    for status, body in answers:
        assert status == 413, body
        error = body["error"]
        assert isinstance(error, dict) and error["code"] == "body_too_large" and "65536" in str(error["message"])
    assert after - before < RSS_GROWTH_LIMIT_MIB, f"RSS grew from {before:.0f} to {after:.0f} MiB"
    assert bounded.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID) - rejected_before == CLIENTS
    # The server still serves bodies under the bound.
    ok = httpx.post(f"{bounded.base_url}/v1/images/generations", json={"prompt": "a quay", "size": "64x64"},
                    timeout=60)
    assert ok.status_code == 200, ok.text
