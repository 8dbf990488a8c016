"""The autoscaler's kopf handlers: one evaluation loop per autoscaled ImageModelDeployment.

A daemon rather than a timer, because the interval is an operator setting read
at startup (IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS), not at import. kopf starts
the daemon when spec.autoscaling.enabled turns true and stops it when it turns
false or the resource goes away. An event handler sees every change between
evaluations: the gateway's demand on a resource at zero wakes it at once, and
`kubectl scale` is reported as ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, PLURAL, VERSION
from ..autoscaling.loop import Autoscaler
from ..autoscaling.prometheus import PrometheusClient
from ..config import OperatorSettings
from ..kube import Kube, KubeError


@kopf.on.startup()
async def start_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    """Build the autoscaler from the operator settings."""
    settings = OperatorSettings()
    prometheus = PrometheusClient(settings.prometheus_url) if settings.prometheus_url else None
    memo.autoscaler = Autoscaler(
        Kube.from_environment(), prometheus, settings.gpu_classes,
        interval_seconds=settings.autoscale_interval_seconds,
    )


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    """Close the autoscaler's connections."""
    autoscaler: Autoscaler = memo.autoscaler
    await autoscaler.aclose()


def _autoscaling_enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


@kopf.daemon(GROUP, VERSION, PLURAL, when=_autoscaling_enabled, cancellation_timeout=10)
async def autoscale(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger,
                    **_: Any) -> None:
    """Evaluate the resource every interval until autoscaling is turned off."""
    autoscaler: Autoscaler = memo.autoscaler
    try:
        while not stopped:
            try:
                await autoscaler.evaluate(_plain(body))
            except (KubeError, ValidationError) as error:
                logger.warning(f"autoscaling skipped this interval: {error}")
            await stopped.wait(autoscaler.interval_seconds)
    finally:
        autoscaler.forget(body.metadata.uid or "")


@kopf.on.event(GROUP, VERSION, PLURAL, when=_autoscaling_enabled)
async def autoscaled_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                           **_: Any) -> None:
    """Wake a resource at zero on fresh gateway demand; report kubectl scale as ignored."""
    if type == "DELETED":
        return
    autoscaler: Autoscaler = memo.autoscaler
    try:
        await autoscaler.on_event(_plain(body))
    except (KubeError, ValidationError) as error:
        logger.warning(f"autoscaler could not act on this change: {error}")


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists (a snapshot for one evaluation)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
