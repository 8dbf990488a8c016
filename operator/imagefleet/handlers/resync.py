"""The level-based safety net: re-check every resource now and then.

Watch events drive nearly everything; this catches what no event announced
(a missed watch event, a failed reconcile after its retries, a child that lost
its labels). A resource already in line costs no API request.
"""

from __future__ import annotations

import asyncio

import kopf

from .common import Indexes, request_reconcile


async def resync_forever(memo: kopf.Memo, interval_seconds: float) -> None:
    indexes: Indexes = memo.indexes
    while True:
        await asyncio.sleep(interval_seconds)
        for namespace, name in list(indexes.imds):
            request_reconcile(memo, namespace, name)
