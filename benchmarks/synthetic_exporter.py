"""One process that publishes every resource's runtime series: SYNTHETIC metrics, no runtime runs.

    python benchmarks/synthetic_exporter.py --state STATE.json --port PORT

STATE.json (rewritten by the benchmark, re-read when it changes):
    {"namespace": NS, "resources": {NAME: {"pods": N, "queue": Q}, ...}}

For each resource it serves N `imagefleet_queue_depth` series, one per pod (label
`pod`), that add up to Q, and each pod's peak memory (`imagefleet_memory_bytes{kind="peak"}`,
a fixed 1 GiB as `source="cuda"`, under every model's estimate: the operator records it once
per resource and warns for none), with the labels a runtime pod's series carry after the
usual relabelling (`namespace`, `imagefleet_io_name`). Prometheus scrapes it as one
target of the LocalPrometheus file-targets job.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from imagefleet import metrics  # noqa: E402
from imagefleet.autoscaling.queries import NAME_LABEL, NAMESPACE_LABEL  # noqa: E402


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._text = b""

    def exposition(self) -> bytes:
        """The series for the state file as it is now (rendered again only when it changed)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return b""
        if mtime != self._mtime:
            try:
                state: dict[str, Any] = json.loads(self.path.read_text())
            except ValueError:  # caught mid-write: serve the last one
                return self._text
            self._text = render(state).encode()
            self._mtime = mtime
        return self._text


PEAK_BYTES = 1 << 30


def render(state: dict[str, Any]) -> str:
    namespace = state["namespace"]
    queue = [f"# HELP {metrics.QUEUE_DEPTH} Requests waiting (SYNTHETIC).", f"# TYPE {metrics.QUEUE_DEPTH} gauge"]
    memory = [f"# HELP {metrics.MEMORY_BYTES} Measured memory (SYNTHETIC).", f"# TYPE {metrics.MEMORY_BYTES} gauge"]
    for name, resource in sorted(state["resources"].items()):
        pods = max(1, int(resource["pods"]))
        share = float(resource["queue"]) / pods
        for pod in range(pods):
            labels = f'{NAMESPACE_LABEL}="{namespace}",{NAME_LABEL}="{name}",pod="{name}-{pod}"'
            queue.append(f"{metrics.QUEUE_DEPTH}{{{labels}}} {share:g}")
            memory.append(f'{metrics.MEMORY_BYTES}{{{labels},kind="peak",source="cuda"}} {PEAK_BYTES}')
    return "\n".join(queue + memory) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    state = State(args.state)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = state.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
