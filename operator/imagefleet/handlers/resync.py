"""The level-based safety net: re-check every resource now and then.

Watch events drive nearly everything; this catches what no event announced
(a missed watch event, a failed reconcile after its retries, a child that lost
its labels). A resource already in line costs no API request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from .common import reconcile_from_indexes

logger = logging.getLogger(__name__)


async def resync_forever(
    memo: kopf.Memo,
    imds: Mapping[Any, Any],
    runtime_deployments: Mapping[Any, Any],
    runtime_services: Mapping[Any, Any],
    interval_seconds: float,
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        for namespace, name in list(imds):
            try:
                await reconcile_from_indexes(memo, namespace, name, imds, runtime_deployments, runtime_services)
            except Exception:  # noqa: BLE001 - one resource's bug must not stop the others
                logger.exception("resync of %s/%s failed", namespace, name)
