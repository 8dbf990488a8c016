"""Finding 5: one key cannot take more than its share, and a request no pod would take wakes nothing.

Attacks, each against the real gateway app in front of real runtime processes:
- a key with `rate: 1, burst: 2` in the keys file sends 6 requests at once (the old gateway sent
  them all); another key is not slowed by it;
- requests a pod refuses, `steps: 10**22` and `size: 99999x99999`, to a model group at zero (the
  old gateway held them and woke the resource; now a 422 names the field, and nothing is held);
- a pod whose accelerator broke answers 503 `out_of_service` to what it is sent (the old gateway
  passed that 503 on, though nothing ran; now the request goes to another pod);
- keys send more requests than their share of the queue and of the requests in flight, each share
  set per key in the keys file (the old gateway had one pool of hold slots for every key).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from imagefleet import metrics as names
from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from imagefleet.gateway.service import Settings
from tests.gateway.support import running_gateway
from tests.helpers import wait_until
from tests.runtime.support import RunningServer
from tests.security.hostile import hostile_pod

pytestmark = pytest.mark.slow
KEYS = KeyRing([ApiKey(name="greedy", sha256=digest("key-greedy"), rate=1, burst=2),
                ApiKey(name="steady", sha256=digest("key-steady"))])


def generate(base_url: str, body: dict[str, object], key: str = "key-steady") -> httpx.Response:
    return httpx.post(f"{base_url}/v1/images/generations", headers={"authorization": f"Bearer {key}"},
                      json={"model": "thumbs", "prompt": "x", "size": "64x64", **body}, timeout=60)


def test_a_key_over_its_rate_is_refused_and_other_keys_are_not(bulk_pod: RunningServer) -> None:
    with running_gateway(keys=KEYS) as gw:
        gw.set_resource("thumbs", tier="bulk")
        gw.set_endpoints("thumbs", [bulk_pod.base_url])
        gw.wait_polled([bulk_pod.base_url])
        before = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
        with ThreadPoolExecutor(6) as pool:  # 6 at once: the burst of 2, and no second's worth of refill
            answers = list(pool.map(lambda _: generate(gw.base_url, {}, "key-greedy"), range(6)))
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) >= 2 and statuses.count(429) >= 3 and set(statuses) == {200, 429}, statuses
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
        assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + statuses.count(200)
        assert [generate(gw.base_url, {}).status_code for _ in range(4)] == [200] * 4
        assert gw.metric(names.GATEWAY_KEY_REQUESTS_TOTAL, key="greedy", code="429") == statuses.count(429)


@pytest.mark.parametrize(("body", "param"), [({"steps": 10**22}, "steps"), ({"size": "99999x99999"}, "size"),
                                             ({"steps": 51}, "steps"), ({"size": "512x520"}, "size")])
def test_a_request_over_the_spec_limits_is_refused_before_it_wakes_anything(body: dict[str, object],
                                                                            param: str) -> None:
    with running_gateway(Settings(hold_timeout_seconds=2, poll_interval_seconds=0.1)) as gw:
        gw.set_resource("thumbs", tier="bulk", generation={"maxSteps": 50, "maxWidth": 512, "maxHeight": 512})
        answer = generate(gw.base_url, body)  # at zero: the old gateway held it and woke the resource
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["param"] == param and "thumbs" in answer.json()["error"]["message"]
        assert gw.demand == []
        assert gw.metric(names.GATEWAY_ARRIVALS_TOTAL, resource_namespace="ns", resource_name="thumbs") == 0
        within = generate(gw.base_url, {"steps": 50, "size": "512x512"})  # the limits themselves are held
        assert within.status_code == 503 and within.json()["error"]["code"] == "no_ready_pod", within.text
        assert [name for name, _ in gw.demand][:1] == ["thumbs"]


def test_a_broken_pods_out_of_service_is_sent_to_another_pod(bulk_pod: RunningServer) -> None:
    with hostile_pod("broken") as broken, running_gateway() as gw:
        gw.set_resource("thumbs", tier="bulk")
        gw.set_endpoints("thumbs", [broken.url, bulk_pod.base_url])
        gw.wait_polled([broken.url, bulk_pod.base_url])
        before = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
        statuses = [generate(gw.base_url, {}).status_code for _ in range(6)]
        assert broken.generations >= 1  # the picker tried the broken pod (it reports an empty queue)
        assert statuses == [200] * 6
        assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + 6


def test_each_key_holds_at_most_its_own_share_of_the_queue_and_of_the_requests_in_flight() -> None:
    """A tenant given `maxQueued: 3, maxInFlight: 4` in the keys file gets 3 requests held and its 4th
    refused; a key without them gets the gateway's bounds (1 waiting, 2 in flight here); a key with
    `maxInFlight: 1` is refused its second request in flight though the gateway's bound is 2. No pod:
    every request waits, so each one counts against both bounds until the hold timeout."""
    keys = KeyRing([ApiKey(name="large", sha256=digest("key-large"), maxQueued=3, maxInFlight=4),
                    ApiKey(name="small", sha256=digest("key-small")),
                    ApiKey(name="tiny", sha256=digest("key-tiny"), maxInFlight=1)])
    settings = Settings(hold_timeout_seconds=8.0, max_queued_per_key=1, max_in_flight_per_key=2)

    def as_key(gw_url: str, key: str) -> httpx.Response:
        return generate(gw_url, {"model": "cold"}, key=f"key-{key}")

    with running_gateway(settings, keys=keys) as gw, ThreadPoolExecutor(6) as pool:
        gw.set_resource("cold")

        def held(count: int) -> None:
            wait_until(lambda: gw.metric(names.GATEWAY_HELD_REQUESTS, group="cold", tier="standard") == count,
                       timeout=10, interval=0.02, message=f"{count} requests held")

        waiting = [pool.submit(as_key, gw.base_url, "large") for _ in range(3)]
        held(3)
        fourth = as_key(gw.base_url, "large")
        assert fourth.status_code == 429 and "per API key (large)" in fourth.json()["error"]["message"], fourth.text
        waiting.append(pool.submit(as_key, gw.base_url, "small"))
        held(4)
        second = as_key(gw.base_url, "small")
        assert second.status_code == 429 and "per API key (small)" in second.json()["error"]["message"], second.text
        waiting.append(pool.submit(as_key, gw.base_url, "tiny"))
        held(5)
        over = as_key(gw.base_url, "tiny")
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_in_flight", over.text
        assert "'tiny' has 1 requests in flight" in over.json()["error"]["message"]
        assert [f.result(timeout=30).status_code for f in waiting] == [503] * 5  # the hold timeout, no pod
