"""ImageModelDeployment handlers: reconcile on every event of the resource (level-based).

Every watch event (creation, a spec change, a status write, the initial listing
at start-up) asks for the same reconcile, which writes only what differs: no
change-detection bookkeeping in the object, no finalizer, and an operator that
restarts simply converges. The reconcile runs off the watch (the reconcile queue);
a deleted resource's turn forgets it. The other resources of the namespace are then
re-checked for their RoutingValid verdict, which depends on this one.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, PLURAL, VERSION
from .common import recheck_overflow, request_reconcile


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Make the runtime children and status match the spec; forget a deleted resource."""
    request_reconcile(memo, namespace, name)
    recheck_overflow(memo, namespace, name)
