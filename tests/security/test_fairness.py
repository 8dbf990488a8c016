"""Finding 5: one key cannot take more than its share, and a request no pod would take wakes nothing.

Attacks, each against the real gateway app in front of real runtime processes:
- a key with `rate: 1, burst: 2` in the keys file sends 6 requests at once (the old gateway sent
  them all); another key is not slowed by it;
- requests a pod refuses, `steps: 10**22` and `size: 99999x99999`, to a model group at zero (the
  old gateway held them and woke the resource; now a 422 names the field, and nothing is held);
- a pod whose accelerator broke answers 503 `out_of_service` to what it is sent (the old gateway
  passed that 503 on, though nothing ran; now the request goes to another pod).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from imagefleet import metrics as names
from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from imagefleet.gateway.service import Settings
from tests.gateway.support import running_gateway
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
