"""Finding 4: an API key's scope holds on every path, and the gateway shows nothing outside it.

Attacks, each against the real gateway app in front of real runtime processes:
- probe for other tenants' groups through error messages (a 403 named them, a 404 listed them);
- read every tenant's group names and traffic at /metrics, or the API at /docs and /openapi.json;
- a key limited to bulk sends `quality: auto` to a group at zero and waits while a standard
  resource appears (the old gateway re-routed the held request to it without checking the key);
- a key limited to bulk asks for bulk, whose resource overflows to a standard one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from imagefleet import metrics as names
from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from imagefleet.gateway.service import Settings
from tests.gateway.support import running_gateway
from tests.helpers import wait_until
from tests.runtime.support import RunningServer

pytestmark = pytest.mark.slow
KEYS = KeyRing([ApiKey(name="thumbs", sha256=digest("key-thumbs"), groups=frozenset({"team-a/sdxl"}),
                       tiers=frozenset({"bulk"}))])
AUTH = {"authorization": "Bearer key-thumbs"}
BULK_ONLY = KeyRing([ApiKey(name="bulk-only", sha256=digest("key-bulk"), tiers=frozenset({"bulk"}))])
BULK_AUTH = {"authorization": "Bearer key-bulk"}


def generate(base_url: str, body: dict[str, Any], headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/images/generations", headers=headers, timeout=60,
                      json={"prompt": "x", "size": "64x64", **body})


def test_groups_outside_the_scope_look_like_groups_that_do_not_exist(bulk_pod: RunningServer) -> None:
    with running_gateway(keys=KEYS) as gw:
        for namespace, name in (("team-a", "sdxl"), ("team-a", "flux"), ("team-b", "secret-project")):
            gw.set_resource(name, tier="bulk", namespace=namespace)
        assert generate(gw.base_url, {"model": "nothing-here"}, headers={}).status_code == 401  # the key first
        hidden = generate(gw.base_url, {"model": "flux"})
        missing = generate(gw.base_url, {"model": "nothing-here"})
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"].replace("flux", "X") == \
            missing.json()["error"]["message"].replace("nothing-here", "X")
        assert "secret-project" not in hidden.text + missing.text and "team-b" not in hidden.text + missing.text
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert httpx.get(gw.base_url + path, timeout=5).status_code == 404, path
        assert httpx.get(f"{gw.metrics_url}/metrics", timeout=5).status_code == 200


def test_a_held_request_is_not_rerouted_to_a_tier_outside_the_key(
    bulk_pod: RunningServer, premium_pod: RunningServer
) -> None:
    with running_gateway(keys=BULK_ONLY) as gw, ThreadPoolExecutor(1) as pool:
        gw.set_resource("sdxl-bulk", tier="bulk", group="sdxl", namespace="team-a")  # at zero
        answer = pool.submit(generate, gw.base_url, {"model": "sdxl"}, BULK_AUTH)  # quality auto
        wait_until(lambda: any(name == "sdxl-bulk" for name, _ in gw.demand), timeout=10, interval=0.05,
                   message="the request to be held (demand for sdxl-bulk)")
        standard_before = premium_pod.metric(names.IMAGES_GENERATED_TOTAL)
        gw.set_resource("sdxl-standard", tier="standard", group="sdxl", namespace="team-a")
        gw.set_endpoints("sdxl-standard", [premium_pod.base_url], namespace="team-a")
        gw.wait_polled([premium_pod.base_url])  # the held request has been woken with it there
        bulk_before = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
        gw.set_endpoints("sdxl-bulk", [bulk_pod.base_url], namespace="team-a")
        assert answer.result(timeout=60).status_code == 200
        assert premium_pod.metric(names.IMAGES_GENERATED_TOTAL) == standard_before
        assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == bulk_before + 1


def test_overflow_never_reaches_a_tier_outside_the_key(premium_pod: RunningServer) -> None:
    with running_gateway(Settings(hold_timeout_seconds=2, poll_interval_seconds=0.1), keys=BULK_ONLY) as gw:
        gw.set_resource("sdxl-bulk", tier="bulk", group="sdxl", overflow_to="sdxl-standard", namespace="team-a")
        gw.set_resource("sdxl-standard", tier="standard", group="sdxl", namespace="team-a")
        gw.set_endpoints("sdxl-standard", [premium_pod.base_url], namespace="team-a")
        gw.wait_polled([premium_pod.base_url])
        before = premium_pod.metric(names.IMAGES_GENERATED_TOTAL)
        answer = generate(gw.base_url, {"model": "sdxl", "quality": "low"}, BULK_AUTH)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "no_ready_pod", answer.text
        assert premium_pod.metric(names.IMAGES_GENERATED_TOTAL) == before


def test_a_deeply_nested_body_is_a_client_error_not_a_crash() -> None:
    """Low finding: 30,000 nested arrays (60 KB, under the body limit) made the gateway's parser recurse
    past Python's limit: a 500. Now a 422 naming the body, like any malformed JSON."""
    with running_gateway() as gw:
        answer = httpx.post(f"{gw.base_url}/v1/images/generations", content=b"[" * 30_000 + b"]" * 30_000,
                            headers={"content-type": "application/json"}, timeout=10)
        assert answer.status_code == 422 and answer.json()["error"]["param"] == "body", answer.text
