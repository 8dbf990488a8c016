"""Finding 3 (runtime part): a client that sends its request headers a byte at a time cannot hold a
runtime pod's connections. Attack against a real runtime process: one connection sends half a request
line and stops; the pod closes it within the header timeout. A kept-alive connection that sits idle
meanwhile (past the header timeout) is not cut: idle connections are the keep-alive timeout's."""

from __future__ import annotations

import socket
import time

import pytest

from imagefleet.http_limits import HEADER_TIMEOUT_SECONDS
from tests.runtime.support import RunningServer

pytestmark = pytest.mark.slow
REQUEST = b"GET /v1/load HTTP/1.1\r\nHost: pod\r\n\r\n"


def answer(connection: socket.socket) -> None:
    """One request and its whole answer (headers, then Content-Length bytes) on `connection`."""
    connection.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"closed by the pod after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += connection.recv(65536)


def test_slow_headers_are_cut_off_and_idle_keep_alive_is_not(bulk_pod: RunningServer) -> None:
    host, port = bulk_pod.base_url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as idle, \
            socket.create_connection((host, int(port)), timeout=5) as slow:
        answer(idle)
        opened = time.monotonic()
        slow.sendall(b"GET /v1/lo")
        slow.settimeout(HEADER_TIMEOUT_SECONDS + 10)
        assert slow.recv(1) == b""  # closed by the pod, not by our timeout (that raises)
        assert time.monotonic() - opened < HEADER_TIMEOUT_SECONDS + 5
        answer(idle)  # idle for the header timeout and more, and still served
