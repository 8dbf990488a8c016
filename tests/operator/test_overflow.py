"""The RoutingValid verdict (imagefleet.overflow) and how a plan reports it: conditions and Events."""

from __future__ import annotations

from typing import Any

from imagefleet import GROUP, VERSION
from imagefleet.catalog import load_gpu_classes
from imagefleet.overflow import CYCLE, TARGET_IN_OTHER_GROUP, TARGET_NOT_FOUND, Link, overflow_problems
from imagefleet.reconcile.plan import Config, Observed, plan
from imagefleet.reconcile.status import routing_out_of_date

CONFIG = Config(gpu_classes=load_gpu_classes(), runtime_image="runtime:test")


def link(name: str, to: str | None = None, group: str = "sdxl") -> Link:
    return Link(name, group, to)


def test_a_valid_chain_has_no_problem() -> None:
    assert overflow_problems("ns", [link("a", "b"), link("b", "c"), link("c")]) == {}


def test_a_cycle_of_two_is_a_problem_of_both() -> None:
    problems = overflow_problems("ns", [link("a", "b"), link("b", "a")])
    assert {name: p.reason for name, p in problems.items()} == {"a": CYCLE, "b": CYCLE}
    assert problems["a"].message == "spec.routing.overflowTo: the chain of targets loops (a -> b -> a)"
    assert "(b -> a -> b)" in problems["b"].message


def test_a_cycle_of_three_flags_its_members_not_the_resource_leading_into_it() -> None:
    problems = overflow_problems("ns", [link("entry", "a"), link("a", "b"), link("b", "c"), link("c", "a")])
    assert set(problems) == {"a", "b", "c"}
    assert all(p.reason == CYCLE for p in problems.values())
    assert "(a -> b -> c -> a)" in problems["a"].message


def test_a_missing_target_names_it_and_the_namespace() -> None:
    problems = overflow_problems("team", [link("a", "gone"), link("b", "a")])
    assert set(problems) == {"a"}  # b's own target exists; a's is the broken one
    assert problems["a"].reason == TARGET_NOT_FOUND
    assert problems["a"].message == (
        "spec.routing.overflowTo: ImageModelDeployment 'gone' does not exist in namespace team"
    )


def test_a_target_in_another_group_names_both_groups() -> None:
    problems = overflow_problems("ns", [link("a", "b"), link("b", group="flux")])
    assert problems["a"].reason == TARGET_IN_OTHER_GROUP
    assert "'b' is in group 'flux', not 'sdxl'" in problems["a"].message


def _imd(name: str, routing: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "routing": routing},
        "status": status or {},
    }


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def test_the_plan_reports_the_problem_keeps_ready_out_of_it_and_warns_once() -> None:
    (problem,) = overflow_problems("ns", [link("a", "gone")]).values()
    first = plan(Observed(_imd("a", {"overflowTo": "gone"}), None, None, overflow_problem=problem), CONFIG,
                 timestamp="T0")
    assert first.status is not None
    routing = _condition(first.status, "RoutingValid")
    assert routing is not None and (routing["status"], routing["reason"]) == ("False", TARGET_NOT_FOUND)
    assert "spec.routing.overflowTo" in routing["message"]
    ready = _condition(first.status, "Ready")
    assert ready is not None and ready["reason"] == "Creating"  # Ready follows the pods, not the overflow
    assert [(e.type, e.reason) for e in first.events] == [("Warning", TARGET_NOT_FOUND)]
    # Same verdict again: no Event. Fixed: a Normal Event.
    again = plan(Observed(_imd("a", {"overflowTo": "gone"}, first.status), None, None, overflow_problem=problem),
                 CONFIG, timestamp="T1")
    assert not [e for e in again.events if e.reason == TARGET_NOT_FOUND]
    fixed = plan(Observed(_imd("a", {"overflowTo": "gone"}, first.status), None, None), CONFIG, timestamp="T2")
    assert fixed.status is not None
    routing = _condition(fixed.status, "RoutingValid")
    assert routing is not None and (routing["status"], routing["reason"]) == ("True", "OverflowTargetValid")
    assert ("Normal", "OverflowTargetValid") in [(e.type, e.reason) for e in fixed.events]


def test_a_new_reason_while_false_is_a_new_event() -> None:
    missing, cycle = (overflow_problems("ns", links)["a"] for links in (
        [link("a", "b")], [link("a", "b"), link("b", "a")]))
    first = plan(Observed(_imd("a", {"overflowTo": "b"}), None, None, overflow_problem=missing), CONFIG)
    assert first.status is not None
    looped = plan(Observed(_imd("a", {"overflowTo": "b"}, first.status), None, None, overflow_problem=cycle), CONFIG)
    assert ("Warning", CYCLE) in [(e.type, e.reason) for e in looped.events]


def test_no_overflow_target_means_no_routing_condition() -> None:
    planned = plan(Observed(_imd("a", {"group": "sdxl"}), None, None), CONFIG)
    assert planned.status is not None and _condition(planned.status, "RoutingValid") is None


def test_out_of_date_compares_the_seen_condition_with_the_verdict_now() -> None:
    (problem,) = overflow_problems("ns", [link("a", "b")]).values()
    planned = plan(Observed(_imd("a", {"overflowTo": "b"}), None, None, overflow_problem=problem), CONFIG)
    assert planned.status is not None
    seen = _imd("a", {"overflowTo": "b"}, planned.status)
    assert not routing_out_of_date(seen, problem)
    assert routing_out_of_date(seen, None)  # b was created
    assert not routing_out_of_date(_imd("c", {}), None)
