"""The API wrapper's retry policy (the transport is replaced; the real API server is in the cluster tests)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import kube as kube_module
from imagefleet.kube import Conflict, Kube, KubeError, NotFound, WriteLimiter


class ScriptedKube(Kube):
    """A Kube whose transport answers from a script: exceptions are raised, dicts returned."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__(client.ApiClient(client.Configuration()), backoff_seconds=0.001, attempts=4)
        self.answers = answers
        self.calls = 0

    def _request_once(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]


def _error(status: int) -> ApiException:
    error = ApiException(status=status, reason="test")
    error.body = '{"message": "from the server"}'
    return error


async def test_5xx_and_429_are_retried_then_succeed() -> None:
    kube = ScriptedKube([_error(503), _error(429), _error(500), {"ok": True}])
    assert await kube.request("GET", "/x") == {"ok": True}
    assert kube.calls == 4


async def test_connection_errors_are_retried() -> None:
    kube = ScriptedKube([ConnectionResetError("reset"), {"ok": True}])
    assert await kube.request("GET", "/x") == {"ok": True}


async def test_gives_up_after_the_last_attempt() -> None:
    kube = ScriptedKube([_error(503)] * 4)
    with pytest.raises(KubeError, match="HTTP 503.*from the server"):
        await kube.request("GET", "/x")
    assert kube.calls == 4


@pytest.mark.parametrize(("status", "error"), [(409, Conflict), (404, NotFound), (422, KubeError)])
async def test_client_errors_are_not_retried(status: int, error: type[Exception]) -> None:
    kube = ScriptedKube([_error(status), {"never": "reached"}])
    with pytest.raises(error):
        await kube.request("PATCH", "/x")
    assert kube.calls == 1


async def test_delete_of_a_missing_object_is_fine() -> None:
    kube = ScriptedKube([_error(404)])
    await kube.delete("Deployment", "ns", "gone", "uid")


def test_user_agent_names_the_operator_on_its_own_client_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    load = kube_module.config.load_kube_config
    monkeypatch.setattr(kube_module.config, "load_kube_config",
                        lambda **options: load(config_file=str(kubeconfig), **options))
    assert Kube.from_environment().api_client.user_agent == "imagefleet-operator"
    shared = client.ApiClient(client.Configuration())
    Kube(shared)
    assert shared.user_agent != "imagefleet-operator"  # a caller's client keeps its own


async def test_retry_after_of_a_429_is_waited_even_past_the_backoff_cap() -> None:
    error = _error(429)
    error.headers = {"Retry-After": "1"}
    kube = ScriptedKube([error, {"ok": True}])
    kube.max_backoff_seconds = 0.01
    started = time.monotonic()
    assert await kube.request("PATCH", "/x", body={}) == {"ok": True}
    assert time.monotonic() - started >= 1.0


async def test_writes_wait_for_the_limiter_in_order_and_reads_do_not() -> None:
    qps, burst, writes = 20.0, 5, 15
    kube = ScriptedKube([{"n": index} for index in range(writes)] + [{"read": True}])
    kube.limiter = WriteLimiter(qps, burst)
    started = time.monotonic()
    done = await asyncio.gather(*(kube.request("PATCH", f"/x/{index}", body={}) for index in range(writes)))
    elapsed = time.monotonic() - started
    # The burst goes at once; the other ten are spread at 20 a second, none dropped, none repeated.
    assert elapsed >= (writes - burst) / qps * 0.95
    assert sorted(answer["n"] for answer in done) == list(range(writes))
    assert kube.calls == writes
    read_started = time.monotonic()
    assert await kube.request("GET", "/y") == {"read": True}
    assert time.monotonic() - read_started < 0.2  # the bucket is empty, but a read does not wait for it


async def test_an_urgent_write_goes_ahead_of_the_ordinary_ones_waiting() -> None:
    limiter = WriteLimiter(qps=50.0, burst=1)
    order: list[str] = []

    async def write(label: str, urgent: bool = False) -> None:
        await limiter.acquire(urgent=urgent)
        order.append(label)

    ordinary = [asyncio.create_task(write(f"ordinary {index}")) for index in range(5)]
    await asyncio.sleep(0)  # all five wait; the burst's one token went to the first
    urgent = asyncio.create_task(write("urgent", urgent=True))
    await asyncio.gather(*ordinary, urgent)
    # The first took the burst; the urgent one the next token; the others kept their order.
    assert order == ["ordinary 0", "urgent", "ordinary 1", "ordinary 2", "ordinary 3", "ordinary 4"]


async def test_a_cancelled_waiter_takes_no_token() -> None:
    limiter = WriteLimiter(qps=2.0, burst=1)
    await limiter.acquire()  # the bucket is empty now
    cancelled = asyncio.create_task(limiter.acquire())
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    started = asyncio.get_running_loop().time()
    await waiting
    # The next token (0.5 s later) went to the waiter behind the cancelled one; had the cancelled one
    # taken it, the waiter would have had the one after (1.0 s).
    assert asyncio.get_running_loop().time() - started < 0.9
