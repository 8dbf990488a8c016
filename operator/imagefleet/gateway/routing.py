"""Routing: a request's `model` names a model group and its `quality` a tier; the result is the list
of resources to try, in order (the tier's resources, then their overflow targets).

| quality           | tier     |
| ----------------- | -------- |
| low               | bulk     |
| medium            | standard |
| high              | premium  |
| absent or "auto"  | standard if the group has it, else the group's cheapest tier |

A group without the asked tier is a 404 naming the tiers it has: the gateway never upgrades or
downgrades a request silently (an upgrade costs the caller's budget, a downgrade its quality).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..crd.models import Tier
from ..overflow import Link
from ..overflow import overflow_problems as namespace_problems
from .errors import NotFound
from .fleet import Resource, ResourceKey

TIER_ORDER: tuple[Tier, ...] = ("bulk", "standard", "premium")
TIER_BY_QUALITY: dict[str, Tier] = {"low": "bulk", "medium": "standard", "high": "premium"}
DEFAULT_QUALITY = "auto"


@dataclass(frozen=True)
class Route:
    """Where a request may go: `stages[0]` are the resources of the asked tier, each next stage the
    overflow targets of the one before (never a resource twice)."""

    group: str
    tier: Tier
    stages: tuple[tuple[Resource, ...], ...]


def overflow_problems(resources: Mapping[ResourceKey, Resource]) -> dict[ResourceKey, str]:
    """Resources whose spec.routing.overflowTo the gateway ignores, with the reason: the target is
    missing, in another group, or the chain of targets loops back (the operator's RoutingValid verdict)."""
    namespaces: dict[str, list[Link]] = {}
    for resource in resources.values():
        namespaces.setdefault(resource.namespace, []).append(Link(resource.name, resource.group, resource.overflow_to))
    return {
        (namespace, name): problem.message
        for namespace, links in namespaces.items()
        for name, problem in namespace_problems(namespace, links).items()
    }


def groups(resources: Iterable[Resource]) -> dict[str, tuple[Tier, ...]]:
    """Each model group with its tiers, cheapest first."""
    tiers: dict[str, set[Tier]] = {}
    for resource in resources:
        tiers.setdefault(resource.group, set()).add(resource.tier)
    return {group: tuple(t for t in TIER_ORDER if t in found) for group, found in sorted(tiers.items())}


def tier_for(quality: str | None, available: tuple[Tier, ...], group: str) -> Tier:
    """The tier a quality asks for within a group; NotFound names the group's tiers."""
    if quality is None or quality == DEFAULT_QUALITY:
        return "standard" if "standard" in available else available[0]
    tier = TIER_BY_QUALITY[quality]
    if tier not in available:
        known = ", ".join(f"{q} ({TIER_BY_QUALITY[q]})" for q in TIER_BY_QUALITY if TIER_BY_QUALITY[q] in available)
        raise NotFound(f"model group {group!r} has no {tier} tier (quality {quality!r}); it offers quality {known}",
                       param="quality", code="tier_not_found")
    return tier


def route(resources: Mapping[ResourceKey, Resource], model: str | None, quality: str | None,
          ignored: Mapping[ResourceKey, str]) -> Route:
    """The route of a request; NotFound names the known groups (or the group's tiers).

    `ignored` are the resources whose overflowTo is invalid (see `overflow_problems`).
    """
    known = groups(resources.values())
    if model is None or model not in known:
        names = ", ".join(known) or "none yet"
        what = "a request must name a model group in `model`" if model is None else f"unknown model group {model!r}"
        raise NotFound(f"{what}; known groups: {names}", param="model", code="model_not_found")
    tier = tier_for(quality, known[model], model)
    members = [r for r in resources.values() if r.group == model]
    same_tier = [r for r in members if r.tier == tier]
    # A resource of the tier that another one of the tier overflows to is a later stage, not an entry.
    targets = {(r.namespace, r.overflow_to) for r in same_tier if r.key not in ignored and r.overflow_to}
    stage = tuple(sorted((r for r in same_tier if r.key not in targets), key=lambda r: r.key)) or tuple(same_tier)
    stages = []
    visited: set[ResourceKey] = set()
    while stage:
        stages.append(stage)
        visited.update(r.key for r in stage)
        following = {
            (r.namespace, r.overflow_to) for r in stage if r.overflow_to and r.key not in ignored
        } - visited
        stage = tuple(sorted((resources[k] for k in following if k in resources), key=lambda r: r.key))
    return Route(model, tier, tuple(stages))
