"""A hostile "pod" on loopback: an HTTP server whose GET /v1/load answers as a broken or malicious
runtime might (wrong fields, a huge body, a body that drips in a byte at a time), or a pod whose
accelerator broke ("broken": a valid load, and 503 `out_of_service` to every generation)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUGE_BYTES = 64 * 2**20
VALID = {"ready": True, "queued": 0, "running": 0, "queue_limit": 64, "max_batch_size": 4, "batch_seconds": 0.1}


@dataclass
class HostilePod:
    url: str
    server: ThreadingHTTPServer

    @property
    def polls(self) -> int:
        return int(getattr(self.server, "polls", 0))

    @property
    def generations(self) -> int:
        """Generation requests it was sent."""
        return int(getattr(self.server, "generations", 0))


def _handler(mode: str) -> type[BaseHTTPRequestHandler]:
    # Encoded once: made anew on each poll (ten a second), 64 MiB held the GIL away from the gateway's
    # thread in the same test process, and on a loaded machine its requests timed out.
    huge = json.dumps({**VALID, "pad": "x" * HUGE_BYTES}).encode() if mode == "huge" else b""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.server.generations = getattr(self.server, "generations", 0) + 1  # type: ignore[attr-defined]
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"error": {"message": "the accelerator is out of service (device failure)",
                                         "type": "service_unavailable", "param": None,
                                         "code": "out_of_service"}}).encode()
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.server.polls = getattr(self.server, "polls", 0) + 1  # type: ignore[attr-defined]
            if mode == "malformed":  # the fields the gateway indexes are missing
                body = json.dumps({"ready": True}).encode()
            elif mode == "huge":  # well-formed, with 64 MiB of padding
                body = huge
            else:  # "drip": a valid answer, one byte every 0.1 s; "broken": a valid answer
                body = json.dumps(VALID).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                if mode == "drip":
                    for index in range(len(body)):
                        self.wfile.write(body[index:index + 1])
                        self.wfile.flush()
                        time.sleep(0.1)
                else:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@contextmanager
def hostile_pod(mode: str) -> Iterator[HostilePod]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"hostile-{mode}", daemon=True)
    thread.start()
    try:
        yield HostilePod(f"http://127.0.0.1:{server.server_address[1]}", server)
    finally:
        server.shutdown()
        server.server_close()
