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

A model group belongs to one namespace: resources of the same `routing.group` in two namespaces
are two groups, never one, so one tenant cannot take a share of another's requests. `model` names
a group as `namespace/group`, or as `group` alone when exactly one namespace the caller may use
has it; a name that fits several is refused (404 naming the choices), never routed.

The API key is checked here: the groups a key may not use are invisible (the same 404 as a group
that does not exist), and no stage, overflow included, holds a resource of a tier the key may not
use; `within` narrows a route shared by several keys' requests (a queue's) to one request's key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..crd.models import Tier
from ..overflow import Link
from ..overflow import overflow_problems as namespace_problems
from .auth import ApiKey, KeyRing
from .errors import NotFound
from .fleet import GroupKey, Resource, ResourceKey

TIER_ORDER: tuple[Tier, ...] = ("bulk", "standard", "premium")
TIER_BY_QUALITY: dict[str, Tier] = {"low": "bulk", "medium": "standard", "high": "premium"}
DEFAULT_QUALITY = "auto"




@dataclass(frozen=True)
class Route:
    """Where a request may go: `stages[0]` are the resources of the asked tier, each next stage the
    overflow targets of the one before (never a resource twice), all of them allowed to `key`."""

    namespace: str
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


def groups(resources: Iterable[Resource], key: ApiKey | None = None) -> dict[GroupKey, tuple[Tier, ...]]:
    """Each model group `key` may use (all without a key), with its tiers, cheapest first."""
    tiers: dict[GroupKey, set[Tier]] = {}
    for resource in resources:
        if KeyRing.allows_group(key, resource.namespace, resource.group):
            tiers.setdefault((resource.namespace, resource.group), set()).add(resource.tier)
    return {group: tuple(t for t in TIER_ORDER if t in found) for group, found in sorted(tiers.items())}


def model_names(known: Iterable[GroupKey]) -> dict[GroupKey, str]:
    """The name a caller sends for each group: `group` alone where no other namespace has it, else
    `namespace/group`."""
    known = list(known)
    count: dict[str, int] = {}
    for _, group in known:
        count[group] = count.get(group, 0) + 1
    return {(namespace, group): group if count[group] == 1 else f"{namespace}/{group}"
            for namespace, group in known}


def models(resources: Iterable[Resource], key: ApiKey | None) -> dict[str, tuple[Tier, ...]]:
    """The groups `key` may use by the name it sends, with their tiers (GET /v1/models)."""
    known = groups(resources, key)
    names = model_names(known)
    return {names[group]: tiers for group, tiers in known.items()}


def resolve(model: str | None, known: Iterable[GroupKey]) -> GroupKey:
    """The group `model` names among `known` (those the caller may use); NotFound lists only those."""
    known = list(known)
    namespace, _, group = (model or "").rpartition("/")
    matches = [k for k in known if k[1] == group and (not namespace or k[0] == namespace)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = ", ".join(f"{ns}/{g}" for ns, g in matches)
        raise NotFound(f"model group {model!r} is in several namespaces; name one of {choices}", param="model",
                       code="model_ambiguous")
    names = ", ".join(model_names(known).values()) or "none yet"
    what = "a request must name a model group in `model`" if model is None else f"unknown model group {model!r}"
    raise NotFound(f"{what}; known groups: {names}", param="model", code="model_not_found")


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
          ignored: Mapping[ResourceKey, str], key: ApiKey | None = None) -> Route:
    """The route of a request by `key` (None: no keys asked); NotFound names the groups the key may
    use (or the group's tiers), Forbidden a tier the key may not use.

    `ignored` are the resources whose overflowTo is invalid (see `overflow_problems`).
    """
    known = groups(resources.values(), key)
    namespace, group = resolve(model, known)
    available = known[(namespace, group)]
    # "auto" picks among the tiers the key may use; a tier asked by name is checked as asked.
    usable = tuple(t for t in available if KeyRing.allows_tier(key, t))
    tier = tier_for(quality, available if quality in TIER_BY_QUALITY else usable or available, group)
    if key is not None:
        KeyRing.check_tier(key, tier)
    members = [r for r in resources.values() if r.namespace == namespace and r.group == group]
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
        # Overflow never reaches a tier the key may not use (nor another group: see `ignored`).
        stage = tuple(sorted((resources[k] for k in following if k in resources
                              and KeyRing.allows_tier(key, resources[k].tier)),
                             key=lambda r: r.key))
    return Route(namespace, group, tier, tuple(stages))


def within(route_: Route, key: ApiKey | None) -> Route:
    """`route_` without the resources of tiers `key` may not use (a stage left empty goes): a route
    shared by every key's requests (a queue's), narrowed to one request's."""
    if key is None or key.tiers is None:
        return route_
    stages = tuple(kept for stage in route_.stages if (kept := tuple(r for r in stage if r.tier in key.tiers)))
    return replace(route_, stages=stages)
