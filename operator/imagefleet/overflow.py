"""Which `spec.routing.overflowTo` targets of one namespace can be used. Pure.

The API server refuses a resource overflowing to itself (a CEL rule on the root);
everything that involves another object is checked here, by the operator (the
RoutingValid condition) and by the gateway (which ignores a bad target), so both
give the same verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TARGET_NOT_FOUND = "OverflowTargetNotFound"
TARGET_IN_OTHER_GROUP = "OverflowTargetInOtherGroup"
CYCLE = "OverflowCycle"
FIELD = "spec.routing.overflowTo"


@dataclass(frozen=True)
class Link:
    """What the verdict needs of one ImageModelDeployment."""

    name: str
    group: str
    overflow_to: str | None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


def overflow_problems(namespace: str, links: Iterable[Link]) -> dict[str, Problem]:
    """The resources of `namespace` whose overflow target cannot be used, by name.

    A target that is missing or in another group is a problem of the resource naming it.
    A loop is a problem of every resource on it; a resource that only leads into a loop
    (a -> b -> c -> b) keeps its own target.
    """
    by_name = {link.name: link for link in links}
    problems: dict[str, Problem] = {}
    for link in by_name.values():
        if link.overflow_to is None:
            continue
        target = by_name.get(link.overflow_to)
        if target is None:
            problems[link.name] = Problem(
                TARGET_NOT_FOUND,
                f"{FIELD}: ImageModelDeployment {link.overflow_to!r} does not exist in namespace {namespace}",
            )
        elif target.group != link.group:
            problems[link.name] = Problem(
                TARGET_IN_OTHER_GROUP,
                f"{FIELD}: {target.name!r} is in group {target.group!r}, not {link.group!r} like {link.name!r}",
            )
    broken = set(problems)
    for start in by_name.values():
        chain = [start.name]
        current = start
        while current.overflow_to is not None and current.name not in broken:
            following = current.overflow_to
            if following == start.name:
                loop = " -> ".join([*chain, start.name])
                problems[start.name] = Problem(CYCLE, f"{FIELD}: the chain of targets loops ({loop})")
                break
            if following in chain:  # a loop further on: a problem of the resources on it
                break
            chain.append(following)
            current = by_name[following]
    return problems
