"""ImageModelPool handlers: reconcile a pool on every event of it, of its members and of its children.

Level-based like the resources' handlers: each event asks for the pool's reconcile (its own queue), which
writes only what differs and then re-checks its members, whose Ready follows the pool's pods. A member
that joins, leaves or moves between pools asks both pools for a reconcile (their member counts).
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, PLURAL, POOL_PLURAL, VERSION
from .common import request_pool_reconcile


@kopf.on.event(GROUP, VERSION, POOL_PLURAL)
async def pool_event(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Make the pool's children and status match its spec; forget a deleted pool."""
    request_pool_reconcile(memo, namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def member_event(type: str | None, namespace: str, name: str, spec: kopf.Spec, memo: kopf.Memo,
                       **_: Any) -> None:
    """A resource changed: the pool it names now, and the one it named before, recount their members."""
    seen: dict[tuple[str, str], str] = memo.member_pools
    before = seen.pop((namespace, name), None)
    now = None if type == "DELETED" else spec.get("pool")
    if now:
        seen[(namespace, name)] = now
    for pool in sorted({pool for pool in (before, now) if pool}):
        request_pool_reconcile(memo, namespace, pool)
