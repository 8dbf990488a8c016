"""ImageModelDeployment handlers: reconcile on every event of the resource (level-based).

Every watch event (creation, a spec change, a status write, the initial listing
at start-up) runs the same reconcile, which writes only what differs: no
change-detection bookkeeping in the object, no finalizer, and an operator that
restarts simply converges. The other resources of the namespace are then
re-checked for their RoutingValid verdict, which depends on this one.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, KIND, PLURAL, VERSION
from ..reconcile import Reconciler
from ..reconcile.retries import Retries
from .common import reconcile_from_indexes, recheck_overflow
from .indexes import snapshot


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Make the runtime children and status match the spec; forget a deleted resource."""
    if type == "DELETED":
        reconciler: Reconciler = memo.reconciler
        retries: Retries = memo.retries
        reconciler.forget(KIND, namespace, name)
        retries.forget((namespace, name))
    else:
        await reconcile_from_indexes(memo, namespace, name, imd=snapshot(body))
    await recheck_overflow(memo, namespace, name)
