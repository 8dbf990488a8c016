"""The gateway over HTTP, in front of real runtime processes (tiny model, CPU, loopback)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from imagefleet import metrics as names
from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from imagefleet.gateway.picking import PodLoad
from imagefleet.gateway.queue import DEADLINE_HEADER
from imagefleet.gateway.service import Settings
from tests.helpers import wait_until
from tests.runtime.support import RunningServer, free_port

from .support import RunningGateway, running_gateway

pytestmark = pytest.mark.slow
PROMPT = "a lighthouse at dusk"


def post(gw: RunningGateway, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/v1/images/generations", json=body, timeout=kwargs.pop("timeout", 60), **kwargs)


def images(server: RunningServer) -> float:
    return server.metric(names.IMAGES_GENERATED_TOTAL)


def tiered(gw: RunningGateway, bulk: RunningServer, premium: RunningServer) -> None:
    gw.set_resource("sdxl-bulk", tier="bulk", group="sdxl")
    gw.set_resource("sdxl-premium", tier="premium", group="sdxl")
    gw.set_endpoints("sdxl-bulk", [bulk.base_url])
    gw.set_endpoints("sdxl-premium", [premium.base_url])
    gw.wait_polled([bulk.base_url, premium.base_url])


def test_openai_client_quality_low_and_high_land_on_bulk_and_premium(
    bulk_pod: RunningServer, premium_pod: RunningServer
) -> None:
    with running_gateway() as gw:
        tiered(gw, bulk_pod, premium_pod)
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
        models = client.models.list()
        assert [(m.id, m.model_extra and m.model_extra["tiers"]) for m in models.data] == [("sdxl", ["bulk", "premium"])]
        for quality, pod, other in (("low", bulk_pod, premium_pod), ("high", premium_pod, bulk_pod)):
            before, other_before = images(pod), images(other)
            result = client.images.generate(model="sdxl", prompt=PROMPT, quality=quality, size="64x64",  # type: ignore[arg-type]
                                            response_format="b64_json", n=2)
            assert result.data is not None and len(result.data) == 2
            assert images(pod) == before + 2 and images(other) == other_before
        with pytest.raises(openai.NotFoundError) as missing:
            client.images.generate(model="sdxl", prompt=PROMPT, quality="medium", size="64x64")  # type: ignore[arg-type]
        assert "low (bulk), high (premium)" in str(missing.value)
        with pytest.raises(openai.NotFoundError) as unknown:
            client.images.generate(model="flux", prompt=PROMPT)
        assert "known groups: sdxl" in str(unknown.value)
        assert gw.metric(names.GATEWAY_REQUESTS_TOTAL, group="sdxl", tier="premium", code="200") == 1


@pytest.mark.parametrize("body", [{"prompt": PROMPT, "n": 0}, {"prompt": PROMPT, "size": "large"},
                                  {"prompt": PROMPT, "stepz": 3}, {"prompt": "  "}])
def test_bad_body_gets_the_runtimes_422_at_the_gateway(bulk_pod: RunningServer, body: dict[str, Any]) -> None:
    with running_gateway() as gw:
        gw.set_resource("sdxl", tier="bulk")
        gw.set_endpoints("sdxl", [bulk_pod.base_url])
        direct = httpx.post(f"{bulk_pod.base_url}/v1/images/generations", json=body, timeout=30)
        rejected = bulk_pod.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID)
        via = post(gw, {**body, "model": "sdxl"})
        assert via.status_code == direct.status_code == 422
        assert via.json()["error"]["param"] == direct.json()["error"]["param"]
        assert bulk_pod.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID) == rejected  # never sent


def raw_connection(gw: RunningGateway) -> socket.socket:
    host, port = gw.base_url.split("//")[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_answer(conn: socket.socket) -> bytes:
    """One HTTP response, head and whole body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert match is not None, head
    while len(body) < int(match.group(1)):
        body += conn.recv(4096)
    return head + b"\r\n\r\n" + body


def test_oversized_body_413_before_it_is_sent_and_slow_clients_are_cut_off() -> None:
    with running_gateway(header_timeout=1.0, body_timeout=1.0) as gw:
        with raw_connection(gw) as conn:  # declares 10 MB, sends none of it
            conn.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 10000000\r\n\r\n")
            answer = read_answer(conn)
        assert answer.startswith(b"HTTP/1.1 413") and b"body_too_large" in answer
        chunked = post(gw, {"prompt": "x" * 100_000, "model": "any"})
        assert chunked.status_code == 413
        with raw_connection(gw) as conn:  # slowloris: headers never end
            conn.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert conn.recv(4096) == b""  # closed by the gateway
            assert time.monotonic() - started < 5
        with raw_connection(gw) as conn:  # the body never ends
            conn.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            answer = read_answer(conn)
        assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer


def test_keys_401_and_403_in_the_openai_shape(bulk_pod: RunningServer, premium_pod: RunningServer) -> None:
    keys = KeyRing([ApiKey(name="thumbs", sha256=digest("k-thumbs"), tiers=frozenset({"bulk"}))])
    with running_gateway(keys=keys) as gw:
        tiered(gw, bulk_pod, premium_pod)
        body = {"prompt": PROMPT, "model": "sdxl", "quality": "high"}
        assert post(gw, body).status_code == 401
        wrong = post(gw, body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        forbidden = post(gw, body, headers={"authorization": "Bearer k-thumbs"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["param"] == "quality"
        ok = post(gw, {**body, "quality": "low"}, headers={"authorization": "Bearer k-thumbs"})
        assert ok.status_code == 200, ok.text


def test_held_request_is_answered_once_a_pod_is_ready_and_demand_is_signalled(bulk_pod: RunningServer) -> None:
    with running_gateway(Settings(poll_interval_seconds=0.1, hold_timeout_seconds=60)) as gw:
        gw.set_resource("cold", tier="bulk")
        with ThreadPoolExecutor(1) as pool:
            arrived = time.monotonic()
            pending = pool.submit(post, gw, {"prompt": PROMPT, "model": "cold"})
            wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="bulk") == 1,
                       timeout=10, interval=0.05, message="the request to be held")
            wait_until(lambda: len(gw.demand) >= 2, timeout=5, interval=0.05, message="two demand signals")
            gaps = [b - a for (_, a), (_, b) in zip(gw.demand, gw.demand[1:])]
            assert all(gap >= 0.99 for gap in gaps), gaps  # at most once a second while held
            assert not pending.done()
            gw.set_endpoints("cold", [bulk_pod.base_url])  # the pod became ready
            answer = pending.result(timeout=30)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - arrived < 30
        assert gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="bulk") == 0


def test_a_preferred_resource_at_zero_is_signalled_while_its_overflow_serves(bulk_pod: RunningServer) -> None:
    with running_gateway() as gw:
        gw.set_resource("cold", tier="bulk", group="g", overflow_to="warm")
        gw.set_resource("warm", tier="standard", group="g")
        gw.set_endpoints("warm", [bulk_pod.base_url])
        gw.wait_polled([bulk_pod.base_url])
        answer = post(gw, {"prompt": PROMPT, "model": "g", "quality": "low"})
        assert answer.status_code == 200, answer.text
        assert gw.metric(names.GATEWAY_OVERFLOWED_TOTAL, group="g", tier="bulk", to="warm") == 1
        wait_until(lambda: [name for name, _ in gw.demand] == ["cold"], timeout=5, interval=0.02,
                   message="the demand signal for the resource at zero")


def test_queue_bounds_per_api_key_and_per_route_and_none_per_key_without_keys() -> None:
    ring = KeyRing([ApiKey(name=name, sha256=digest(f"{name}-key")) for name in ("a", "b", "c")])
    settings = Settings(poll_interval_seconds=0.1, hold_timeout_seconds=5.0, max_queued_per_route=2,
                        max_queued_per_key=1)
    body = {"prompt": PROMPT, "model": "cold"}

    def as_key(gw: RunningGateway, name: str) -> httpx.Response:
        return post(gw, body, headers={"authorization": f"Bearer {name}-key"})

    with running_gateway(settings, keys=ring) as gw, ThreadPoolExecutor(2) as pool:
        gw.set_resource("cold")  # no pod: every request waits
        held = [pool.submit(as_key, gw, "a")]
        wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == 1,
                   timeout=10, interval=0.02, message="a's request held")
        second = as_key(gw, "a")
        assert second.status_code == 429 and second.json()["error"]["code"] == "queue_full", second.text
        assert "per API key (a)" in second.json()["error"]["message"] and int(second.headers["retry-after"]) >= 1
        held.append(pool.submit(as_key, gw, "b"))
        wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == 2,
                   timeout=10, interval=0.02, message="b's request held")
        third = as_key(gw, "c")
        assert third.status_code == 429 and "per route" in third.json()["error"]["message"], third.text
        assert [f.result(timeout=30).status_code for f in held] == [503, 503]  # the hold timeout
    with running_gateway(replace(settings, max_queued_per_route=10)) as gw, ThreadPoolExecutor(2) as pool:
        gw.set_resource("cold")
        anonymous = [pool.submit(post, gw, body) for _ in range(2)]
        wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == 2,
                   timeout=10, interval=0.02, message="both anonymous requests held: no per-key bound")
        assert [f.result(timeout=30).status_code for f in anonymous] == [503, 503]


def test_hold_times_out_with_503_and_the_bound_on_held_requests() -> None:
    with running_gateway(Settings(poll_interval_seconds=0.1, hold_timeout_seconds=1.0, max_held=1)) as gw:
        gw.set_resource("cold")
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, gw, {"prompt": PROMPT, "model": "cold"})
            wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == 1,
                       timeout=10, interval=0.02, message="the first request to be held")
            second = post(gw, {"prompt": PROMPT, "model": "cold"})
            assert second.status_code == 503 and second.json()["error"]["code"] == "too_many_held"
            timed_out = first.result(timeout=10)
        assert timed_out.status_code == 503 and int(timed_out.headers["retry-after"]) >= 1
        assert timed_out.json()["error"]["code"] == "no_ready_pod"
        assert gw.metric(names.GATEWAY_HOLD_TIMEOUTS_TOTAL, group="cold", tier="standard") == 1


def test_client_disconnect_cancels_a_held_request_and_it_stops_counting_as_demand() -> None:
    with running_gateway(Settings(poll_interval_seconds=0.1, hold_timeout_seconds=60)) as gw:
        gw.set_resource("cold")
        demand = {"resource_namespace": "ns", "resource_name": "cold"}
        with pytest.raises(httpx.ReadTimeout):
            post(gw, {"prompt": PROMPT, "model": "cold"}, timeout=1.0)
        wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == 0,
                   timeout=5, interval=0.05, message="the held request to be cancelled")
        assert gw.metric(names.GATEWAY_QUEUED_REQUESTS, **demand) == 0
        assert gw.metric(names.GATEWAY_QUEUED_WORK_SECONDS, **demand) == 0
        assert gw.metric(names.GATEWAY_ARRIVALS_TOTAL, **demand) == 1  # it did arrive
        assert gw.metric(names.GATEWAY_QUEUE_WAIT_SECONDS + "_count", **demand) == 0  # never left for a pod
        assert gw.metric(names.GATEWAY_RESOURCE_SECONDS + "_count", **demand) == 0  # never answered
        assert gw.metric(names.GATEWAY_HOLD_TIMEOUTS_TOTAL, group="cold", tier="standard") == 0


def test_a_pod_gone_since_its_last_poll_is_retried_elsewhere(bulk_pod: RunningServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the connection is refused, nothing ran
    with running_gateway(Settings(poll_interval_seconds=60)) as gw:
        gw.set_resource("sdxl", tier="bulk")
        gw.set_endpoints("sdxl", [bulk_pod.base_url, dead])
        gw.wait_polled([bulk_pod.base_url])
        # Its last poll said idle (it died right after): the picker prefers it, the send is refused.
        gw.call(lambda: gw.gateway.loads.__setitem__(
            dead, PodLoad(True, 0, 0, 64, 4, 0.1, asyncio.get_running_loop().time())))
        # ... and the live pod looks busier (in flight, which no poll overwrites): the dead one is picked first.
        gw.call(lambda: gw.gateway.in_flight.__setitem__(bulk_pod.base_url, 3))
        before = images(bulk_pod)
        answer = post(gw, {"prompt": PROMPT, "model": "sdxl"})
        assert answer.status_code == 200, answer.text
        assert images(bulk_pod) == before + 1
        assert gw.metric(names.GATEWAY_RETRIES_TOTAL) == 1


class DyingPod:
    """A pod that takes each request and dies before answering: it reads the request, then closes."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.taken = 0
        self.polled = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:  # a poll of its load dies the same way: the gateway then keeps its last one
                request = connection.recv(65536)
                if request.startswith(b"POST /v1/images/generations"):
                    self.taken += 1
                elif request.startswith(b"GET /v1/load"):
                    self.polled += 1

    def close(self) -> None:
        self._listener.close()


def test_a_pod_that_dies_holding_a_request_has_it_made_again_once_elsewhere(bulk_pod: RunningServer) -> None:
    """Nobody received an image from the dead pod: the gateway sends the request once more; a second
    death is a 502, never a third try."""
    dying, dying_too = DyingPod(), DyingPod()
    try:
        with running_gateway(Settings(poll_interval_seconds=60)) as gw:
            gw.set_resource("sdxl", tier="bulk")
            gw.set_endpoints("sdxl", [bulk_pod.base_url, dying.url])
            gw.wait_polled([bulk_pod.base_url])
            gw.call(lambda: gw.gateway.loads.__setitem__(
                dying.url, PodLoad(True, 0, 0, 64, 4, 0.1, asyncio.get_running_loop().time())))
            gw.call(lambda: gw.gateway.in_flight.__setitem__(bulk_pod.base_url, 3))  # the dying one is picked first
            before = images(bulk_pod)
            answer = post(gw, {"prompt": PROMPT, "model": "sdxl"})
            assert answer.status_code == 200, answer.text
            assert dying.taken == 1 and images(bulk_pod) == before + 1
            assert gw.metric(names.GATEWAY_RETRIES_TOTAL) == 1
        with running_gateway(Settings(poll_interval_seconds=60)) as gw:
            gw.set_resource("sdxl", tier="bulk")
            gw.set_endpoints("sdxl", [dying.url, dying_too.url])
            # A poll round that began before both were known would forget a load set meanwhile.
            wait_until(lambda: dying_too.polled >= 1, timeout=10, interval=0.02,
                       message="a poll round that knew both dying pods")
            for url in (dying.url, dying_too.url):
                gw.call(lambda url=url: gw.gateway.loads.__setitem__(
                    url, PodLoad(True, 0, 0, 64, 4, 0.1, asyncio.get_running_loop().time())))
            answer = post(gw, {"prompt": PROMPT, "model": "sdxl"})
            assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_failed", answer.text
            assert dying.taken + dying_too.taken == 1 + 2  # once each: the first request's death, then this one's two
    finally:
        dying.close()
        dying_too.close()


def burst(gw: RunningGateway, body: dict[str, Any], count: int) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return post(gw, body)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_overflow_under_saturation_and_never_otherwise(bulk_pod: RunningServer, premium_pod: RunningServer) -> None:
    with running_gateway(Settings(poll_interval_seconds=0.1)) as gw:
        gw.set_resource("p", tier="premium", group="g", overflow_to="b")
        gw.set_resource("b", tier="premium", group="g")  # a second premium resource, on the bulk pod
        gw.set_endpoints("p", [premium_pod.base_url])
        gw.set_endpoints("b", [bulk_pod.base_url])
        gw.wait_polled([premium_pod.base_url, bulk_pod.base_url])
        for _ in range(3):
            assert post(gw, {"prompt": PROMPT, "model": "g"}).status_code == 200
        assert gw.metric(names.GATEWAY_OVERFLOWED_TOTAL, group="g", tier="premium", to="b") == 0
        answers = burst(gw, {"prompt": PROMPT, "model": "g"}, 8)
        assert [a.status_code for a in answers] == [200] * 8
        assert gw.metric(names.GATEWAY_OVERFLOWED_TOTAL, group="g", tier="premium", to="b") >= 1


def test_a_burst_waits_in_the_queue_instead_of_being_shed_and_demand_is_counted(premium_pod: RunningServer) -> None:
    """One pod that takes one request at a time and queues one: a burst of 8 waits at the gateway
    (its deadline can be met) and is answered whole; each arrival is counted once, the wait observed."""
    with running_gateway(Settings(poll_interval_seconds=0.1)) as gw:
        gw.set_resource("alone", tier="premium")
        gw.set_endpoints("alone", [premium_pod.base_url])
        gw.wait_polled([premium_pod.base_url])
        answers = burst(gw, {"prompt": PROMPT, "model": "alone"}, 8)
        assert [a.status_code for a in answers] == [200] * 8
        assert gw.metric(names.GATEWAY_SHED_TOTAL, group="alone", tier="premium") == 0
        demand = {"resource_namespace": "ns", "resource_name": "alone"}
        assert gw.metric(names.GATEWAY_ARRIVALS_TOTAL, **demand) == 8
        assert gw.metric(names.GATEWAY_QUEUE_WAIT_SECONDS + "_count", **demand) == 8
        # Each answered request's time from arrival to answer, by the resource that served it (its p95), at
        # least its wait in the gateway's queue.
        assert gw.metric(names.GATEWAY_RESOURCE_SECONDS + "_count", **demand) == 8
        assert gw.metric(names.GATEWAY_RESOURCE_SECONDS + "_sum", **demand) > gw.metric(
            names.GATEWAY_QUEUE_WAIT_SECONDS + "_sum", **demand)
        assert gw.metric(names.GATEWAY_QUEUED_REQUESTS, **demand) == 0
        assert gw.metric(names.GATEWAY_HELD_REQUESTS, group="alone", tier="premium") == 0


def test_a_deadline_that_cannot_be_met_is_shed_with_retry_after_and_a_bad_one_is_refused(
    premium_pod: RunningServer,
) -> None:
    with running_gateway(Settings(poll_interval_seconds=0.1)) as gw:
        gw.set_resource("alone", tier="premium")
        gw.set_endpoints("alone", [premium_pod.base_url])
        gw.wait_polled([premium_pod.base_url])
        batch = httpx.get(f"{premium_pod.base_url}/v1/load", timeout=10).json()["batch_seconds"]
        # Shorter than one batch: no start can meet it, even on an idle pod.
        short = post(gw, {"prompt": PROMPT, "model": "alone"},
                     headers={DEADLINE_HEADER: f"{batch / 4:.6f}"})
        assert short.status_code == 429, short.text
        assert short.json()["error"]["code"] == "deadline_unmet" and int(short.headers["retry-after"]) >= 1
        assert gw.metric(names.GATEWAY_SHED_TOTAL, group="alone", tier="premium") == 1
        assert gw.metric(names.GATEWAY_ARRIVALS_TOTAL, resource_namespace="ns", resource_name="alone") == 1
        for bad in ("soon", "-3", "0"):
            refused = post(gw, {"prompt": PROMPT, "model": "alone"}, headers={DEADLINE_HEADER: bad})
            assert refused.status_code == 422 and refused.json()["error"]["param"] == DEADLINE_HEADER, refused.text
        # Longer than the tier's target: capped at it, and served.
        assert post(gw, {"prompt": PROMPT, "model": "alone"}, headers={DEADLINE_HEADER: "3600"}).status_code == 200


def test_runtime_load_endpoint_and_running_gauge(premium_pod: RunningServer) -> None:
    """What the picker polls, and the queued/running gauges an endpoint picker scrapes."""
    idle = httpx.get(f"{premium_pod.base_url}/v1/load", timeout=10).json()
    assert idle["ready"] is True and idle["queued"] == 0 and idle["running"] == 0
    assert idle["queue_limit"] == 1 and idle["max_batch_size"] == 1 and idle["batch_seconds"] > 0
    seen: list[dict[str, Any]] = []
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(httpx.post, f"{premium_pod.base_url}/v1/images/generations",
                               json={"prompt": PROMPT, "steps": 40}, timeout=60) for _ in range(2)]
        wait_until(lambda: seen.append(httpx.get(f"{premium_pod.base_url}/v1/load", timeout=10).json())
                   or seen[-1]["running"] == 1, timeout=30, interval=0.01, message="a running request")
        wait_until(lambda: premium_pod.metric(names.REQUESTS_RUNNING) == 1, timeout=30, interval=0.01,
                   message="the running gauge at 1")
        for item in pending:
            item.result()
    assert premium_pod.metric(names.REQUESTS_RUNNING) == 0
