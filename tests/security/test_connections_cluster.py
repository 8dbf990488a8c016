"""Finding 6: many slow clients cannot exhaust the gateway's memory or shut out a well-behaved one.

Attack, on the real gateway process (watching the real API server, in front of a real runtime
process), with its chart defaults for the bounds: one API key opens ATTACKERS connections, each
sending a request's headers and the first byte of a body it never finishes (a slow client that
holds what it can). Meanwhile another key sends ordinary requests. The old gateway kept every
connection and request open until the body timeout; now the connections over the per-key bound of
requests in flight are answered with Retry-After (429 over the key's bound, 503 over the
connection bound) and closed at once, the gateway stays under
the chart's memory limit, and the other key is served.

ATTACKERS is scaled to this test machine (2 cores shared with other work): 10,000 connections.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from pathlib import Path

import httpx
import yaml

from imagefleet.gateway.auth import digest
from imagefleet.gateway.service import Settings
from tests.conftest import Cluster
from tests.gateway.process import GatewayProcess, gateway_process
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once
from tests.security.conftest import thumbs_served_by
from tests.runtime.support import RunningServer

ATTACKERS = 10_000
CHART = Path(__file__).parents[2] / "charts" / "imagefleet" / "values.yaml"
BODY = b'{"model": "thumbs", "prompt": "x", "size": "64x64"}'


def memory_limit_mib() -> float:
    """The gateway's memory limit in the chart's values (e.g. 512Mi)."""
    limit = yaml.safe_load(CHART.read_text())["gateway"]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return float(limit[:-2])


def slow_request(host: str, port: int) -> socket.socket:
    connection = socket.create_connection((host, port), timeout=10)
    connection.sendall(b"POST /v1/images/generations HTTP/1.1\r\nhost: gateway\r\n"
                       b"authorization: Bearer key-attacker\r\ncontent-type: application/json\r\n"
                       b"content-length: 1000\r\n\r\n{")
    connection.setblocking(False)
    return connection


def answered(connections: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """What each connection received within `within` seconds (b"" for closed with nothing)."""
    received: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while len(received) < len(connections) and (left := deadline - time.monotonic()) > 0:
            for ready, _ in selector.select(timeout=min(left, 0.5)):
                connection = ready.fileobj
                assert isinstance(connection, socket.socket)
                try:
                    received[connection] = connection.recv(4096)
                except ConnectionResetError:
                    received[connection] = b""
                selector.unregister(connection)
    return received


def test_thousands_of_slow_clients_leave_memory_and_another_key_alone(
    cluster: Cluster, namespace: str, imd_crd: None, fleet_pod: RunningServer, tmp_path: Path  # noqa: F811
) -> None:
    thumbs_served_by(fleet_pod, cluster, namespace)
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n" + "".join(f"  - name: {name}\n    sha256: {digest(f'key-{name}')}\n"
                                        for name in ("attacker", "steady")))
    # The body timeout long enough that every slow client would still be there on the old gateway.
    with gateway_process(cluster.kubeconfig, namespace, tmp_path / "gateway.log", "--api-keys", str(keys),
                         "--body-timeout", "120") as gw:
        def steady() -> httpx.Response:
            return httpx.post(f"{gw.url}/v1/images/generations", content=BODY, timeout=30,
                              headers={"authorization": "Bearer key-steady", "content-type": "application/json"})

        wait_until(lambda: steady().status_code == 200, timeout=30, interval=0.2, message="the gateway to route")
        peak = Peak(gw)
        gateway_host, gateway_port = gw.url.split("//")[1].rsplit(":", 1)
        connections = [slow_request(gateway_host, int(gateway_port)) for _ in range(ATTACKERS)]
        try:
            received = answered(connections, within=30)
            # 503 over the connection bound, 429 over the key's bound of requests in flight.
            refused = [data for data in received.values() if data.startswith((b"HTTP/1.1 503", b"HTTP/1.1 429"))]
            held = ATTACKERS - len(received)
            # The per-key bound of requests in flight holds; every other connection was refused and closed.
            assert held <= Settings.max_in_flight_per_key, (held, len(refused))
            assert len(refused) >= ATTACKERS - Settings.max_in_flight_per_key
            assert all(b"retry-after: 1" in data.lower() for data in refused)
            started = time.monotonic()
            served = [steady() for _ in range(5)]
            assert [a.status_code for a in served] == [200] * 5, [a.text for a in served]
            assert time.monotonic() - started < 15
        finally:
            for connection in connections:
                connection.close()
            peak.stop()
        assert peak.rss_mib < memory_limit_mib(), peak.rss_mib
        print(f"{ATTACKERS} slow connections: {held} held, {len(refused)} refused; "
              f"peak RSS {peak.rss_mib:.0f} MiB (limit {memory_limit_mib():.0f} MiB)")


class Peak:
    """The gateway process's highest resident memory, sampled every 50 ms from now until `stop`."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.rss_mib = gateway.rss_mib()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway,), daemon=True)
        self._thread.start()

    def _run(self, gateway: GatewayProcess) -> None:
        while not self._stopping.wait(0.05):
            self.rss_mib = max(self.rss_mib, gateway.rss_mib())

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def test_connections_over_the_bound_are_refused_at_once_and_the_bound_frees_up(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Connections that send nothing (before the header timeout closes them) fill `--max-connections`:
    the next one gets a 503 with Retry-After and is closed, and once they go, connections are served."""
    with gateway_process(cluster.kubeconfig, namespace, tmp_path / "gateway.log", "--max-connections", "20") as gw:
        host, port = gw.url.split("//")[1].rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
        try:
            with socket.create_connection((host, int(port)), timeout=5) as extra:
                extra.settimeout(5)
                answer = b""
                while chunk := extra.recv(4096):  # the gateway closes it after its answer
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower(), answer
            assert b'"code": "too_many_connections"' in answer, answer
        finally:
            for connection in idle:
                connection.close()
        wait_until(lambda: httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200, timeout=10, interval=0.1,
                   message="a connection served once the idle ones closed")
