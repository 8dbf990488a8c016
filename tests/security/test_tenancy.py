"""Finding 1: a model group belongs to one namespace.

Attack: team-b creates resources with `routing.group: sdxl`, the name of team-a's group, one with a
ready pod that reports an empty queue (the picker's favourite) and one at zero replicas. On the old
gateway team-b's pod served half of team-a's requests and team-a's requests woke team-b's resource.
"""

from __future__ import annotations

import httpx
import pytest

from imagefleet import metrics as names
from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from tests.gateway.support import running_gateway
from tests.runtime.support import RunningServer

pytestmark = pytest.mark.slow
KEYS = KeyRing([ApiKey(name="team-a", sha256=digest("key-a"), groups=frozenset({"team-a/sdxl"})),
                ApiKey(name="platform", sha256=digest("key-admin"))])


def generate(base_url: str, key: str, model: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/images/generations", headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "prompt": "x", "size": "64x64"}, timeout=30)


def test_a_same_named_group_in_another_namespace_gets_none_of_its_requests(
    bulk_pod: RunningServer, premium_pod: RunningServer
) -> None:
    with running_gateway(keys=KEYS) as gw:
        gw.set_resource("sdxl", namespace="team-a")
        gw.set_endpoints("sdxl", [bulk_pod.base_url], namespace="team-a")
        gw.set_resource("intruder", group="sdxl", namespace="team-b")
        gw.set_endpoints("intruder", [premium_pod.base_url], namespace="team-b")
        gw.set_resource("sleeper", group="sdxl", namespace="team-b")  # at zero: no endpoints
        gw.wait_polled([bulk_pod.base_url, premium_pod.base_url])
        team_a_before = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
        team_b_before = premium_pod.metric(names.IMAGES_GENERATED_TOTAL)

        for _ in range(12):
            assert generate(gw.base_url, "key-a", "sdxl").status_code == 200
        assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == team_a_before + 12
        assert premium_pod.metric(names.IMAGES_GENERATED_TOTAL) == team_b_before
        assert [name for name, _ in gw.demand] == []  # team-b's resource at zero was not woken

        # A key of every namespace: the bare name is a collision, refused and never routed.
        collision = generate(gw.base_url, "key-admin", "sdxl")
        assert collision.status_code == 404, collision.text
        assert collision.json()["error"]["code"] == "model_ambiguous"
        assert "team-a/sdxl" in collision.json()["error"]["message"]
        assert premium_pod.metric(names.IMAGES_GENERATED_TOTAL) == team_b_before
        # The qualified name reaches team-b's own group, and only it.
        assert generate(gw.base_url, "key-admin", "team-b/sdxl").status_code == 200
        assert premium_pod.metric(names.IMAGES_GENERATED_TOTAL) == team_b_before + 1
        # team-a's key cannot name team-b's group at all.
        assert generate(gw.base_url, "key-a", "team-b/sdxl").status_code == 404

        listed = httpx.get(f"{gw.base_url}/v1/models", headers={"authorization": "Bearer key-a"}, timeout=5).json()
        assert [m["id"] for m in listed["data"]] == ["sdxl"]
        listed = httpx.get(f"{gw.base_url}/v1/models", headers={"authorization": "Bearer key-admin"},
                           timeout=5).json()
        assert [m["id"] for m in listed["data"]] == ["team-a/sdxl", "team-b/sdxl"]
