"""The gateway's pure parts: routing, overflow checks, filters/scorers/picker, hold-or-shed, keys, bodies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from imagefleet.gateway.auth import ApiKey, KeyRing, digest
from imagefleet.gateway.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from imagefleet.gateway.fleet import Fleet, Resource, ready_urls_from_slice, resource_from_object
from imagefleet.gateway.holding import DemandPacer, cold, pick
from imagefleet.gateway.picking import STALE_AFTER_SECONDS, Candidate, Picker, PodLoad, RoundRobinPicker, usable
from imagefleet.gateway.routing import groups, overflow_problems, route
from imagefleet.gateway.schemas import parse_request

NOW = 1000.0


def resource(name: str, tier: str = "standard", group: str = "sdxl", overflow_to: str | None = None,
             p95: float = 30.0) -> Resource:
    return Resource("ns", name, group, tier, overflow_to, p95)  # type: ignore[arg-type]


def by_key(*resources: Resource) -> dict[tuple[str, str], Resource]:
    return {r.key: r for r in resources}


def load(queued: int = 0, running: int = 0, limit: int = 8, batch: int = 1, seconds: float | None = 1.0,
         at: float = NOW, ready: bool = True) -> PodLoad:
    return PodLoad(ready, queued, running, limit, batch, seconds, at)


# -- parsing the watched objects -------------------------------------------------------------


def imd(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", **spec}}


def routing_view(obj: dict[str, Any]) -> Resource:
    parsed = resource_from_object(obj)
    assert parsed is not None
    return replace(parsed, pricing=None, generation=None)


def test_group_defaults_to_the_name_and_p95_to_the_tier() -> None:
    assert routing_view(imd("thumbs", tier="bulk")) == Resource("ns", "thumbs", "thumbs", "bulk", None, 120)
    routed = routing_view(imd("renders", tier="premium", routing={"group": "sdxl", "overflowTo": "std"},
                              autoscaling={"targetP95Seconds": 5}))
    assert routed == Resource("ns", "renders", "sdxl", "premium", "std", 5)


def test_slice_gives_ready_urls_on_the_http_port() -> None:
    obj = {"metadata": {"namespace": "ns", "name": "a-1", "labels": {"kubernetes.io/service-name": "a"}},
           "ports": [{"name": "http", "port": 8000}],
           "endpoints": [{"addresses": ["192.0.2.1"], "conditions": {"ready": True}},
                         {"addresses": ["192.0.2.2"], "conditions": {"ready": False}},
                         {"addresses": ["192.0.2.3"]}]}
    assert ready_urls_from_slice(obj) == ("http://192.0.2.1:8000", "http://192.0.2.3:8000")
    fleet = Fleet()
    assert fleet.apply_resource("ADDED", imd("a"))
    assert fleet.apply_slice("ADDED", obj)
    assert not fleet.apply_slice("MODIFIED", obj)  # nothing the gateway uses changed
    assert fleet.endpoints(fleet.resources[("ns", "a")]) == ("http://192.0.2.1:8000", "http://192.0.2.3:8000")
    assert fleet.apply_slice("DELETED", obj)
    assert fleet.endpoints(fleet.resources[("ns", "a")]) == ()


def test_a_change_names_the_model_groups_whose_waiting_requests_it_concerns() -> None:
    fleet = Fleet()
    assert fleet.apply_resource("ADDED", imd("a", routing={"group": "g1"})) == {("ns", "g1")}
    assert fleet.apply_resource("MODIFIED", imd("a", routing={"group": "g1"})) == set()
    assert fleet.apply_resource("MODIFIED", imd("a", routing={"group": "g2"})) == {("ns", "g1"), ("ns", "g2")}
    assert fleet.apply_resource("ADDED", imd("b")) == {("ns", "b")}
    ready = {"addresses": ["192.0.2.1"], "conditions": {"ready": True}}

    def endpoint_slice(name: str, service: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": service}},
                "ports": [{"name": "http", "port": 8000}], "endpoints": [ready]}

    assert fleet.apply_slice("ADDED", endpoint_slice("a-1", "a")) == {("ns", "g2")}  # not b's group
    # A pool's pods serve every member: a change of its endpoints concerns each member's group.
    for name in ("m1", "m2"):
        fleet.apply_resource("ADDED", {"metadata": {"namespace": "ns", "name": name}, "spec": {
            "model": {"name": "sdxl"}, "gpuClass": "h100-80gb", "pool": "shared", "routing": {"group": name}}})
    assert fleet.apply_slice("ADDED", endpoint_slice("shared-pool-1", "shared-pool")) == {("ns", "m1"), ("ns", "m2")}
    assert fleet.apply_slice("DELETED", endpoint_slice("a-1", "a")) == {("ns", "g2")}


# -- routing ---------------------------------------------------------------------------------


def test_quality_picks_the_tier_and_the_stages_follow_overflow() -> None:
    fleet = by_key(resource("bulk", "bulk", overflow_to="std"), resource("std", "standard"),
                   resource("prem", "premium", overflow_to="std"))
    assert groups(fleet.values()) == {("ns", "sdxl"): ("bulk", "standard", "premium")}
    low = route(fleet, "sdxl", "low", {})
    assert low.tier == "bulk" and [[r.name for r in s] for s in low.stages] == [["bulk"], ["std"]]
    assert [[r.name for r in s] for s in route(fleet, "sdxl", "high", {}).stages] == [["prem"], ["std"]]
    assert route(fleet, "sdxl", None, {}).tier == "standard"
    assert route(fleet, "sdxl", "auto", {}).tier == "standard"


def test_a_group_belongs_to_its_namespace() -> None:
    team_a, team_b = Resource("team-a", "a", "sdxl", "standard", None, 30), Resource("team-b", "b", "sdxl", "standard", None, 30)
    fleet = by_key(team_a, team_b)
    assert [[r.key for r in s] for s in route(fleet, "team-b/sdxl", None, {}).stages] == [[("team-b", "b")]]
    with pytest.raises(NotFound) as ambiguous:
        route(fleet, "sdxl", None, {})
    assert ambiguous.value.code == "model_ambiguous" and "team-a/sdxl, team-b/sdxl" in ambiguous.value.message
    scoped = ApiKey(name="a", sha256=digest("k"), groups=frozenset({"team-a/sdxl"}))
    assert route(fleet, "sdxl", None, {}, scoped).stages == ((team_a,),)
    with pytest.raises(NotFound):
        route(fleet, "team-b/sdxl", None, {}, scoped)


def test_without_standard_the_default_is_the_cheapest_tier() -> None:
    assert route(by_key(resource("a", "premium"), resource("b", "bulk")), "sdxl", None, {}).tier == "bulk"


def test_unknown_group_and_missing_tier_are_404_naming_what_exists() -> None:
    fleet = by_key(resource("b", "bulk"), resource("p", "premium"), resource("x", group="flux"))
    with pytest.raises(NotFound) as unknown:
        route(fleet, "sd3", "low", {})
    assert unknown.value.param == "model" and "flux, sdxl" in unknown.value.message
    with pytest.raises(NotFound) as tier:
        route(fleet, "sdxl", "medium", {})
    assert tier.value.param == "quality"
    assert "low (bulk), high (premium)" in tier.value.message


def test_overflow_problems_name_the_field_for_missing_other_group_and_loops() -> None:
    fleet = by_key(resource("a", overflow_to="b"), resource("b", overflow_to="c"), resource("c", overflow_to="b"),
                   resource("d", overflow_to="nope"), resource("e", overflow_to="f"), resource("f", group="other"))
    problems = overflow_problems(fleet)
    assert set(problems) == {("ns", "b"), ("ns", "c"), ("ns", "d"), ("ns", "e")}  # a only leads into the loop
    assert all(message.startswith("spec.routing.overflowTo:") for message in problems.values())
    assert "b -> c -> b" in problems[("ns", "b")]
    assert "does not exist" in problems[("ns", "d")] and "group 'other'" in problems[("ns", "e")]
    # The gateway ignores the bad targets: the route stops there instead of looping.
    stages = route(fleet, "sdxl", "medium", problems).stages
    # c is an entry again: the only resource overflowing to it (b) has its target ignored.
    assert [[r.name for r in s] for s in stages] == [["a", "c", "d", "e"], ["b"]]


# -- picking ---------------------------------------------------------------------------------


def candidate(url: str, res: Resource, pod: PodLoad | None, in_flight: int = 0) -> Candidate:
    return Candidate(url, res, pod, in_flight)


def test_filters_drop_stale_unready_full_and_pods_with_a_batch_waiting() -> None:
    r = resource("a", p95=10)
    pods = [
        candidate("ok", r, load()),
        candidate("running-one", r, load(running=1), in_flight=1),  # its next batch is still empty
        candidate("never-polled", r, None),
        candidate("stale", r, load(at=NOW - STALE_AFTER_SECONDS - 0.1)),
        candidate("loading", r, load(ready=False)),
        candidate("full", r, load(queued=8)),
        candidate("own-flood", r, load(queued=0), in_flight=1 + 1),  # the poll lags our own sends
        candidate("batch-waiting", r, load(queued=4, batch=4)),  # its next batch is full already
        candidate("batch-filling", r, load(queued=3, batch=4)),
        candidate("idle-but-slow", r, load(seconds=30.0)),  # misses the target even idle: still used
    ]
    assert [c.url for c in usable(pods, NOW)] == ["ok", "running-one", "batch-filling", "idle-but-slow"]


def test_picker_takes_least_outstanding_work_and_rotates_ties() -> None:
    r = resource("a")
    busy = candidate("busy", r, load(queued=3), in_flight=1)
    idle_queue = candidate("queue", r, load(queued=1), in_flight=0)
    assert Picker().pick([busy, idle_queue]).url == "queue"
    own = candidate("own", r, load(queued=0), in_flight=2)
    assert Picker().pick([own, idle_queue]).url == "queue"
    picker = Picker()
    twins = [candidate("x", r, load()), candidate("y", r, load())]
    assert {picker.pick(twins).url for _ in range(2)} == {"x", "y"}
    round_robin = RoundRobinPicker()
    assert {round_robin.pick([busy, idle_queue]).url for _ in range(2)} == {"busy", "queue"}


# -- send, hold or shed ----------------------------------------------------------------------


def test_overflow_only_when_every_preferred_pod_is_saturated() -> None:
    prem, std = resource("prem", "premium", overflow_to="std", p95=10), resource("std")
    fleet = by_key(prem, std)
    r = route(fleet, "sdxl", "high", {})
    spare = {std.key: [candidate("s", std, load())]}
    calm = pick(r, {prem.key: [candidate("p", prem, load())], **spare}, NOW, Picker())
    assert calm is not None and calm.candidate.url == "p" and not calm.overflowed
    full = pick(r, {prem.key: [candidate("p", prem, load(queued=1))], **spare}, NOW, Picker())
    assert full is not None and full.candidate.url == "s" and full.overflowed


def test_no_pod_with_room_waits_and_the_first_choices_without_a_pod_are_cold() -> None:
    a, b = resource("a", overflow_to="b"), resource("b")
    r = route(by_key(a, b), "sdxl", None, {})
    none_ready = {a.key: [], b.key: [candidate("b1", b, load(queued=8))]}
    assert pick(r, none_ready, NOW, Picker()) is None
    assert cold(r, none_ready) == (a,)
    warming = {a.key: [candidate("a1", a, None)], b.key: [candidate("b1", b, load(queued=8))]}
    assert pick(r, warming, NOW, Picker()) is None and cold(r, warming) == ()
    busy = {a.key: [candidate("a1", a, load(queued=1))], b.key: [candidate("b1", b, load(queued=1))]}
    assert pick(r, busy, NOW, Picker()) is None


def test_demand_is_signalled_at_most_once_a_second_per_resource() -> None:
    pacer = DemandPacer()
    assert pacer.due(("ns", "a"), 10.0)
    assert not pacer.due(("ns", "a"), 10.9)
    assert pacer.due(("ns", "b"), 10.9)
    assert pacer.due(("ns", "a"), 11.0)


# -- keys ------------------------------------------------------------------------------------


def test_keys_401_for_missing_or_wrong_403_outside_groups_or_tiers() -> None:
    ring = KeyRing([ApiKey(name="team", sha256=digest("s3cret"), groups=frozenset({"sdxl"}),
                           tiers=frozenset({"bulk"})), ApiKey(name="admin", sha256=digest("root"))])
    for header in (None, "s3cret", "Bearer ", "Bearer wrong"):
        with pytest.raises(Unauthorized):
            ring.identify(header)
    team = ring.identify("Bearer s3cret")
    assert team.name == "team" and ring.identify("bearer root").name == "admin"
    fleet = by_key(resource("a", "bulk"), resource("b", "premium"), resource("f", "bulk", group="flux"))
    assert route(fleet, "sdxl", "low", {}, team).tier == "bulk"
    with pytest.raises(Forbidden) as tier:
        route(fleet, "sdxl", "high", {}, team)
    assert tier.value.param == "quality"
    with pytest.raises(NotFound) as group:  # outside its scope: as if it did not exist
        route(fleet, "flux", "low", {}, team)
    assert group.value.param == "model" and "flux" not in group.value.message.split(";")[1]


def test_keys_file_holds_hashes_only() -> None:
    ring = KeyRing.from_yaml(f"keys:\n  - name: a\n    sha256: {digest('k')}\n    tiers: [bulk]\n")
    assert ring.identify("Bearer k").tiers == frozenset({"bulk"})
    with pytest.raises(ValueError):
        KeyRing.from_yaml("keys:\n  - name: a\n    key: plaintext\n")


# -- bodies: the same answers as the runtime ---------------------------------------------------

BODIES: list[dict[str, Any]] = [
    {"prompt": "x"}, {"prompt": ""}, {"prompt": "   "}, {"prompt": "x", "n": 0}, {"prompt": "x", "n": 11},
    {"prompt": "x", "n": "2"}, {"prompt": "x", "size": "large"}, {"prompt": "x", "size": "64x64"},
    {"prompt": "x", "steps": 0}, {"prompt": "x", "guidance_scale": -1}, {"prompt": "x", "seed": -1},
    {"prompt": "x", "response_format": "url"}, {"prompt": "x", "stepz": 3}, {"n": 1},
    {"prompt": "x", "negative_prompt": "y" * 4001}, {"prompt": 3},
]


@pytest.mark.parametrize("body", BODIES)
def test_gateway_refuses_what_the_runtime_schema_refuses_naming_the_same_field(body: dict[str, Any]) -> None:
    import json

    from pydantic import ValidationError

    from imagefleet.images_api import GenerationRequest as RuntimeRequest

    try:
        RuntimeRequest.model_validate(body)
        runtime_field = None
    except ValidationError as error:
        runtime_field = ".".join(str(p) for p in error.errors()[0]["loc"]) or "body"
    try:
        parse_request(json.dumps(body).encode())
        gateway_field = None
    except InvalidRequest as error:
        gateway_field = error.param
    assert gateway_field == runtime_field


def test_gateway_fields_are_not_forwarded_and_bad_json_names_the_body() -> None:
    request, forwarded = parse_request(b'{"prompt": "x", "model": "sdxl", "quality": "high", "seed": 1}')
    assert request.quality == "high" and forwarded == b'{"prompt": "x", "seed": 1}'
    with pytest.raises(InvalidRequest) as error:
        parse_request(b"{nope")
    assert error.value.param == "body" and error.value.status == 422
    with pytest.raises(InvalidRequest) as quality:
        parse_request(b'{"prompt": "x", "quality": "hd"}')
    assert quality.value.param == "quality"


def test_every_field_the_runtime_serves_passes_the_gateway() -> None:
    request, forwarded = parse_request(b'{"prompt": "x", "output_format": "webp", "quality": "low", "n": 2}')
    assert request.output_format == "webp" and forwarded == b'{"prompt": "x", "output_format": "webp", "n": 2}'
