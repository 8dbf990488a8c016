"""The level-based safety net: re-check every resource now and then.

Watch events drive nearly everything; this catches what no event announced
(a missed watch event, a failed reconcile after its retries, a child that lost
its labels). A resource already in line costs no API request.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from .common import Indexes, reconcile_from_indexes, reconcile_pool_or_forget

logger = logging.getLogger(__name__)


async def resync_forever(memo: kopf.Memo, interval_seconds: float) -> None:
    indexes: Indexes = memo.indexes
    while True:
        await asyncio.sleep(interval_seconds)
        # One at a time, not through the reconcile queue: a pass over thousands of resources
        # paces itself instead of re-planning all of them at once every interval.
        for namespace, name in list(indexes.imds):
            try:
                await reconcile_from_indexes(memo, namespace, name)
            except Exception:  # noqa: BLE001 - one resource's bug must not stop the others
                logger.exception("resync of %s/%s failed", namespace, name)
        for namespace, name in list(indexes.model_pools):
            try:
                await reconcile_pool_or_forget(memo, (namespace, name))
            except Exception:  # noqa: BLE001 - one pool's bug must not stop the others
                logger.exception("resync of pool %s/%s failed", namespace, name)
