"""Finding 7: a gateway that is stopped answers what it has accepted.

Attack (a rollout or an eviction is enough): a client's request is held while its resource has no
ready pod; the gateway is told to exit (what its SIGTERM handler does: uvicorn's `should_exit`);
then a pod becomes ready. The gateway, no longer accepting connections, still sends the held request
to it and answers 200: nothing the client sent is lost or has to be sent again (which the official
client would do, generating twice). The chart gives it the time (preStop, grace period:
tests/chart/test_gateway.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from imagefleet import metrics as names
from tests.gateway.support import running_gateway
from tests.helpers import wait_until
from tests.runtime.support import RunningServer

pytestmark = pytest.mark.slow


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_a_held_request_is_answered_after_the_gateway_is_told_to_exit(bulk_pod: RunningServer) -> None:
    with running_gateway() as gw, ThreadPoolExecutor(1) as pool:
        gw.set_resource("thumbs")  # at zero: no endpoints
        held = pool.submit(httpx.post, f"{gw.base_url}/v1/images/generations", timeout=60,
                           json={"model": "thumbs", "prompt": "x", "size": "64x64"})
        wait_until(lambda: any(name == "thumbs" for name, _ in gw.demand), timeout=10, interval=0.05,
                   message="the request to be held (demand for thumbs)")
        gw.server.should_exit = True
        wait_until(lambda: _refused(gw.base_url), timeout=10, interval=0.05, message="the gateway to stop accepting")
        before = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
        gw.set_endpoints("thumbs", [bulk_pod.base_url])
        answer = held.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + 1
