"""Finding 2: one pod's /v1/load answer must not stop, stall or bloat the gateway's load poller.

Attack: a hostile pod joins the fleet and answers its load polls with missing fields, 64 MiB, or a
byte every 0.1 s. The gateway keeps polling (the hostile pod is asked again and again), keeps its
load unknown, and keeps serving another group's requests; /readyz stays 200.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from imagefleet.gateway.picking import PodLoad
from imagefleet.gateway.upstream import STALE_MIN_SECONDS, LoadPoller, Upstream
from tests.helpers import wait_until
from tests.runtime.support import RunningServer
from tests.gateway.support import running_gateway

from .hostile import hostile_pod

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["malformed", "huge", "drip"])
def test_a_hostile_load_answer_leaves_the_gateway_serving(bulk_pod: RunningServer, mode: str) -> None:
    with hostile_pod(mode) as bad, running_gateway() as gw:
        gw.set_resource("good")
        gw.set_endpoints("good", [bulk_pod.base_url])
        gw.wait_polled([bulk_pod.base_url])
        gw.set_resource("bad")
        gw.set_endpoints("bad", [bad.url])
        # The poller comes back to the hostile pod round after round (each round ends within 0.5 s).
        wait_until(lambda: bad.polls >= 4, timeout=15, interval=0.05, message="the poller to keep polling")
        assert bad.url not in gw.gateway.loads  # unknown: never picked on what it said
        answer = httpx.post(f"{gw.base_url}/v1/images/generations", timeout=30,
                            json={"model": "good", "prompt": "x", "size": "64x64"})
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{gw.base_url}/readyz", timeout=5).status_code == 200


def test_readiness_follows_the_poller_rounds() -> None:
    """A poller whose rounds stopped (its task died or hangs) is unhealthy, and /readyz then says 503
    (in create_app); one that completes rounds is healthy."""

    async def scenario() -> tuple[bool, bool, bool]:
        upstream = Upstream(generation_timeout=1.0)
        loads: dict[str, PodLoad] = {}
        poller = LoadPoller(upstream, lambda: [], loads, lambda: None, interval=0.05)
        before = poller.healthy()
        task = asyncio.ensure_future(poller.run())
        async with asyncio.timeout(5):  # the first round of an empty fleet
            while not poller.healthy():
                await asyncio.sleep(0.01)
        running = poller.healthy()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await upstream.close()
        return before, running, poller.healthy(time.monotonic() + STALE_MIN_SECONDS + 1)

    assert asyncio.run(scenario()) == (False, True, False)
