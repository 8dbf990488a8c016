"""A local HTTP server answering like the Hugging Face Hub (the few endpoints huggingface_hub calls to
download a snapshot) for repos that are plain directories here. It stands in for the Hub in tests;
the download code that talks to it is the real one."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """`GET /api/models/{repo}[/revision/{rev}]`, `GET /api/models/{repo}/tree/{rev}` and
    `HEAD|GET /{repo}/resolve/{rev}/{path}`; files in `forbidden` answer 403."""

    def __init__(self, repos: Mapping[str, Path], forbidden: frozenset[str] = frozenset()) -> None:
        self.repos = dict(repos)
        self.forbidden = forbidden
        # (method, path, Authorization header) of every request.
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _files(self, root: Path) -> list[str]:
        return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())

    def answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path, handler.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo, root = self._repo(parts[2:4])
            if root is None:
                return self._send(handler, 404, b'{"error": "Repository not found"}', {}, body)
            files = self._files(root)
            if len(parts) > 4 and parts[4] == "tree":
                entries = [{"type": "file", "path": name, "size": (root / name).stat().st_size,
                            "oid": hashlib.sha1((root / name).read_bytes()).hexdigest()} for name in files]
                return self._send(handler, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, body)
            info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                    "siblings": [{"rfilename": name} for name in files]}
            return self._send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            _, root = self._repo(parts[:2])
            name = "/".join(parts[4:])
            if root is None or not (root / name).is_file():
                return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
            if name in self.forbidden:
                return self._send(handler, 403, b'{"error": "forbidden"}', {}, body)
            data = (root / name).read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            return self._send(handler, 200, data, {"X-Repo-Commit": COMMIT, "ETag": etag}, body)
        return self._send(handler, 404, b"", {}, body)

    def _repo(self, parts: list[str]) -> tuple[str, Path | None]:
        repo = "/".join(parts)
        return repo, self.repos.get(repo)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, data: bytes, headers: Mapping[str, str], body: bool) -> None:
        handler.send_response(code)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
