"""The Prometheus client and the batched queries, read for one resource, against a real local Prometheus
(Debian's /usr/bin/prometheus) scraping real HTTP exporters."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import start_http_server

from imagefleet import metrics
from imagefleet.autoscaling import batch, queries
from imagefleet.autoscaling.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
    PrometheusTooLarge,
    PrometheusUnavailable,
)
from imagefleet.dev.processes import HOST, free_port
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.gateway.telemetry import GatewayMetrics
from tests.autoscaling.exporter import Exporter
from tests.helpers import wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

NAMESPACE = "team-a"
WINDOW_SECONDS = 10.0


@dataclass
class Setup:
    prometheus: LocalPrometheus
    exporters: dict[str, Exporter]  # pod -> its exporter


def labels(name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    return {queries.NAMESPACE_LABEL: namespace, queries.NAME_LABEL: name}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Pods a1, a2 of resource `a`, b1 of resource `b` (same namespace), and c1: `a` in another namespace."""
    exporters = {pod: Exporter() for pod in ("a1", "a2", "b1", "c1")}
    prometheus = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval="1s")
    prometheus.set_targets(
        [
            Target(exporters["a1"].address, labels("a")),
            Target(exporters["a2"].address, labels("a")),
            Target(exporters["b1"].address, labels("b")),
            Target(exporters["c1"].address, labels("a", namespace="team-c")),
        ]
    )
    prometheus.start()
    try:
        yield Setup(prometheus, exporters)
    finally:
        prometheus.stop()
        for exporter in exporters.values():
            exporter.close()


def read(url: str, name: str, namespace: str = NAMESPACE) -> queries.Readings:
    async def go() -> queries.Readings:
        async with PrometheusClient(url) as client:
            return await batch.read_one(client, namespace, name, WINDOW_SECONDS)

    return asyncio.run(go())


def wait_for_reading(
    setup: Setup,
    name: str,
    check: Callable[[queries.Readings], bool],
    message: str,
    namespace: str = NAMESPACE,
) -> queries.Readings:
    def ready() -> queries.Readings | None:
        readings = read(setup.prometheus.url, name, namespace)
        return readings if check(readings) else None

    found = wait_until(ready, timeout=60, message=message)
    assert found is not None
    return found


def raw(url: str, promql: str) -> list[float]:
    async def go() -> list[float]:
        async with PrometheusClient(url) as client:
            return [sample.value for sample in await client.query(promql)]

    return asyncio.run(go())


def wait_scraped(setup: Setup, count: int) -> None:
    wait_until(
        lambda: raw(setup.prometheus.url, "count(up == 1)") == [float(count)],
        timeout=60,
        message=f"{count} targets up",
    )


def test_queue_depth_is_summed_over_the_resource_pods_only(setup: Setup) -> None:
    setup.exporters["a1"].queue_depth.set(3)
    setup.exporters["a2"].queue_depth.set(4)
    setup.exporters["b1"].queue_depth.set(100)
    setup.exporters["c1"].queue_depth.set(1000)
    readings = wait_for_reading(setup, "a", lambda r: r.queue_depth == 7, "queue depth of `a` to read 7")
    assert readings.age_seconds is not None and 0 <= readings.age_seconds < 5
    # Each target is scraped on its own schedule: wait for the others' values too.
    wait_for_reading(setup, "b", lambda r: r.queue_depth == 100, "queue depth of `b` to read 100")
    assert read(setup.prometheus.url, "a").queue_depth == 7
    wait_for_reading(
        setup, "a", lambda r: r.queue_depth == 1000, "queue depth of `a` in team-c to read 1000",
        namespace="team-c",
    )


def test_p95_comes_from_the_histogram_summed_over_pods(setup: Setup) -> None:
    wait_scraped(setup, 4)
    # Counts must rise inside the rate window: observe after the first scrapes.
    for _ in range(100):
        setup.exporters["a1"].latency.observe(0.3)
    for _ in range(3):
        setup.exporters["a2"].latency.observe(20.0)
    # 103 requests: the 95th percentile is among a1's 0.3 s ones (bucket 0.25..0.5);
    # a per-pod maximum would say ~20 s. Read it once both pods' counts are scraped.
    count = (
        f'sum({metrics.REQUEST_DURATION_SECONDS}_count'
        f'{{{queries.NAMESPACE_LABEL}="{NAMESPACE}",{queries.NAME_LABEL}="a"}})'
    )
    wait_until(lambda: raw(setup.prometheus.url, count) == [103.0], timeout=60, message="103 requests scraped")
    readings = wait_for_reading(setup, "a", lambda r: r.p95_seconds is not None, "a p95 for `a`")
    assert readings.p95_seconds is not None and 0.25 < readings.p95_seconds <= 0.5


def test_busy_replicas_is_the_rate_of_batch_seconds(setup: Setup) -> None:
    wait_scraped(setup, 4)
    setup.exporters["b1"].batch_duration.observe(3.0)
    readings = wait_for_reading(setup, "b", lambda r: bool(r.busy_replicas), "busy replicas of `b` above 0")
    # 3 GPU-seconds inside a 10 s window: about 0.3 (rate() extrapolates a little).
    assert readings.busy_replicas is not None and 0.1 < readings.busy_replicas < 0.6


def test_series_count_mean_batch_and_window_samples(setup: Setup) -> None:
    wait_scraped(setup, 4)
    readings = wait_for_reading(setup, "a", lambda r: r.queue_series == 2, "two queue series of `a`")
    assert readings.stale_series == 0
    assert readings.window_samples is not None and readings.window_samples >= queries.MIN_WINDOW_SAMPLES
    # a1 runs two batches of 3 requests taking 4.5 s each and one of 1 taking 1.5 s. (One pod:
    # rate() extrapolates each series on its own, so a mean across pods is only near the truth.)
    for size, seconds in ((3, 4.5), (3, 4.5), (1, 1.5)):
        setup.exporters["a1"].metrics.batch_size.observe(size)
        setup.exporters["a1"].batch_duration.observe(seconds)
    # rate(sum) / rate(count): (9 + 1.5) / 3 s and (3 + 3 + 1) / 3 requests.
    readings = wait_for_reading(
        setup, "a", lambda r: r.batch_size is not None and abs(r.batch_size - 7 / 3) < 1e-6, "the mean batch of `a`"
    )
    assert readings.batch_seconds == pytest.approx(3.5)


def test_scrape_intervals_come_from_prometheus_targets(setup: Setup) -> None:
    wait_scraped(setup, 4)

    async def targets() -> dict[tuple[str, str], float]:
        async with PrometheusClient(setup.prometheus.url) as client:
            return queries.scrape_intervals(await client.active_targets())

    assert asyncio.run(targets()) == {(NAMESPACE, "a"): 1.0, (NAMESPACE, "b"): 1.0, ("team-c", "a"): 1.0}


def test_no_traffic_p95_is_nan_and_reads_as_no_signal(setup: Setup) -> None:
    wait_scraped(setup, 4)
    query = queries.p95_query(NAMESPACE, "b", WINDOW_SECONDS)
    values = wait_until(lambda: raw(setup.prometheus.url, query), timeout=60, message="a p95 series for `b`")
    assert len(values) == 1 and math.isnan(values[0])  # Prometheus says NaN...
    readings = read(setup.prometheus.url, "b")
    assert readings.p95_seconds is None  # ...which the autoscaler reads as no signal, not 0
    assert readings.queue_depth == 100


def test_unknown_resource_has_no_signal(setup: Setup) -> None:
    wait_scraped(setup, 4)
    assert read(setup.prometheus.url, "nope") == queries.Readings(None, None, None, None, queue_series=0)


def test_a_target_gone_goes_stale_and_leaves_the_sum(setup: Setup, tmp_path: Path) -> None:
    extra = Exporter()
    try:
        extra.queue_depth.set(5)
        setup.prometheus.set_targets(
            [Target(setup.exporters["a1"].address, labels("a")), Target(extra.address, labels("d"))]
        )
        wait_until(lambda: read(setup.prometheus.url, "d").queue_depth == 5, timeout=60, message="`d` at 5")
        extra.close()
        wait_until(
            lambda: read(setup.prometheus.url, "d").queue_depth is None,
            timeout=60,
            message="`d` to go stale once its target stops answering",
        )
    finally:
        setup.prometheus.set_targets(
            [
                Target(setup.exporters["a1"].address, labels("a")),
                Target(setup.exporters["a2"].address, labels("a")),
                Target(setup.exporters["b1"].address, labels("b")),
                Target(setup.exporters["c1"].address, labels("a", namespace="team-c")),
            ]
        )


def test_bad_promql_is_a_query_error_with_prometheus_message(setup: Setup) -> None:
    with pytest.raises(PrometheusQueryError, match="bad_data"):
        raw(setup.prometheus.url, "sum(")


def test_more_than_one_series_is_an_error_not_a_guess(setup: Setup) -> None:
    wait_scraped(setup, 4)

    async def go() -> float | None:
        async with PrometheusClient(setup.prometheus.url) as client:
            return await client.value(f'{metrics.QUEUE_DEPTH}{{namespace="{NAMESPACE}"}}')

    with pytest.raises(PrometheusQueryError, match="returned 3 series, expected one"):
        asyncio.run(go())


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        raw(f"http://{HOST}:{free_port()}", "up")


def test_a_prometheus_stopping_under_queries_reads_as_unavailable_never_as_a_query_error(tmp_path: Path) -> None:
    """Queries race a real Prometheus's shutdown (SIGTERM). What comes back while it stops (its
    readiness gate's plain-text 503, a reset, then a refused connection) is "Prometheus is down"."""
    server = LocalPrometheus(tmp_path / "stopping", scrape_interval="1s")
    server.start()
    failures: list[Exception] = []

    async def go() -> None:
        async with PrometheusClient(server.url, timeout=2.0) as client:
            async def hammer() -> None:
                while True:
                    try:
                        await client.query("up")
                    except PrometheusError as error:
                        failures.append(error)
                        if not isinstance(error, PrometheusUnavailable) or "unreachable" in str(error):
                            return

            tasks = [asyncio.ensure_future(hammer()) for _ in range(4)]
            await asyncio.sleep(0.2)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    try:
        asyncio.run(go())
    finally:
        server.stop()
    assert failures
    assert all(isinstance(error, PrometheusUnavailable) for error in failures), failures


def test_prometheus_not_ready_503_is_unavailable_and_a_json_timeout_is_too_large() -> None:
    """Prometheus's own answers, served from a socket: the readiness gate's plain 503 while it starts
    or stops, and its API's 503 with errorType "timeout" for a query too large (a smaller one may pass)."""
    answers = {
        b"/api/v1/query": (503, "text/plain", b"Service Unavailable"),
        b"/api/v1/targets": (503, "application/json",
                             b'{"status":"error","errorType":"timeout","error":"query timed out"}'),
    }
    listener = socket.create_server((HOST, 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                path = connection.recv(65536).split(b" ")[1].split(b"?")[0]
                status, kind, body = answers[path]
                connection.sendall(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                                   b"Connection: close\r\n\r\n%s" % (status, kind.encode(), len(body), body))

    thread = threading.Thread(target=serve)
    thread.start()

    async def go() -> tuple[Exception, Exception]:
        async with PrometheusClient(f"http://{HOST}:{listener.getsockname()[1]}") as client:
            errors: list[Exception] = []
            for call in (client.query("up"), client.active_targets()):
                try:
                    await call
                except PrometheusError as error:
                    errors.append(error)
            return errors[0], errors[1]

    try:
        not_ready, too_large = asyncio.run(go())
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert isinstance(not_ready, PrometheusUnavailable) and "503" in str(not_ready)
    assert isinstance(too_large, PrometheusTooLarge)


@contextmanager
def silent_server() -> Iterator[str]:
    """A real socket that accepts connections and never answers; its URL."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield f"http://{HOST}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_a_server_that_never_answers_times_out() -> None:
    """The call gives up, it does not hang."""

    async def go(url: str) -> None:
        async with PrometheusClient(url, timeout=0.5) as client:
            await client.query("up")

    with silent_server() as url, pytest.raises(PrometheusUnavailable, match="timed out"):
        asyncio.run(go(url))


def test_a_batch_that_times_out_splits_down_to_each_resource_and_reports_each(caplog: pytest.LogCaptureFixture) -> None:
    """Prometheus takes the queries and never answers within the read timeout: the round halves its
    batches down to one resource each, logs and counts every split, and hands each resource its own
    failure. (A real Prometheus answers a small query faster than any read timeout can be trusted to
    expire: a silent socket is what never answers.)"""
    keys = [(NAMESPACE, "a"), (NAMESPACE, "b"), ("team-c", "a")]
    splits_before = batch.SPLITS._value.get()

    async def go(url: str) -> batch.Round:
        async with PrometheusClient(url, timeout=httpx.Timeout(5.0, read=0.2)) as client:
            return await batch.read_round(client, WINDOW_SECONDS, keys)

    with caplog.at_level("WARNING", logger=batch.__name__), silent_server() as url:
        result = asyncio.run(go(url))
    # All three, then the half of two: two splits; the single resources are not split further.
    assert result.splits == 2
    assert batch.SPLITS._value.get() - splits_before == 2
    assert sum("splitting it in halves" in record.getMessage() for record in caplog.records) == 2
    assert set(result.failures) == set(keys)
    assert all(isinstance(error, PrometheusTimeout) for error in result.failures.values())
    queries = len(batch.batch_queries("{}", WINDOW_SECONDS))
    assert result.queries == queries * 5  # all, the two halves, and the two singles of the first half


class GatewayReplica:
    """One gateway replica's demand series (the gateway's own metric definitions), served for Prometheus,
    counting arrivals for team-a/a at a steady pace from a thread; `restart()` starts over from zero on
    the same address, as a restarted replica does."""

    def __init__(self, port: int = 0, queued: float = 3.0) -> None:
        self.metrics = GatewayMetrics()
        self.metrics.queued.labels(NAMESPACE, "a").set(queued)
        server, self._thread = start_http_server(port, addr=HOST, registry=self.metrics.registry)
        self._server = server
        self.port = server.server_port
        self.address = f"{HOST}:{self.port}"
        self._stop = threading.Event()
        self._counter = threading.Thread(target=self._count, daemon=True)
        self._counter.start()

    def _count(self) -> None:
        while not self._stop.wait(0.1):  # 10 arrivals a second
            self.metrics.arrivals.labels(NAMESPACE, "a").inc()

    def close(self) -> None:
        self._stop.set()
        self._counter.join()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def test_gateway_demand_is_summed_over_replicas_and_a_restart_never_reads_as_zero(tmp_path: Path) -> None:
    """Two gateway replicas count arrivals for one resource; one restarts (its counter back to 0).
    Every round's arrival rate stays near the sum (never zero, never missing), and the queue is the sum."""
    first, second = GatewayReplica(queued=3.0), GatewayReplica(queued=2.0)
    prometheus = LocalPrometheus(tmp_path / "prometheus", scrape_interval="1s")
    prometheus.set_targets([Target(first.address), Target(second.address)])
    prometheus.start()
    key = (NAMESPACE, "a")

    def reading() -> queries.Readings:
        async def go() -> queries.Readings:
            async with PrometheusClient(prometheus.url) as client:
                result = await batch.read_round(client, WINDOW_SECONDS, [key])
            return result.readings(key, 90.0)

        return asyncio.run(go())

    try:
        wait_until(lambda: (reading().gateway_arrival_rate or 0) > 15, timeout=60, message="both replicas counted")
        assert reading().gateway_queued == 5.0
        port = second.port
        second.close()
        second = GatewayReplica(port=port, queued=2.0)  # restarted: every counter from zero
        rates = []
        deadline = time.monotonic() + 3 * WINDOW_SECONDS / 2
        while time.monotonic() < deadline:
            rates.append(reading().gateway_arrival_rate)
            time.sleep(0.5)
        assert all(rate is not None and rate > 5 for rate in rates), rates
    finally:
        prometheus.stop()
        first.close()
        second.close()
