"""The gateway's per-key limits and Idempotency-Key answers, pure parts: the token bucket, the
in-flight bounds, the generation limits of a spec, and the answers' window and memory bound."""

from __future__ import annotations

import asyncio

import pytest

from imagefleet.gateway.auth import ApiKey, digest, parse_keys
from imagefleet.gateway.errors import BadGateway, InvalidRequest, Shed, Unavailable
from imagefleet.gateway.idempotency import REPLAYED_HEADER, Answer, IdempotentAnswers
from imagefleet.gateway.fleet import resource_from_object
from imagefleet.gateway.limits import InFlight, RateLimits, TokenBucket


def key(name: str = "team-a", **fields: object) -> ApiKey:
    return ApiKey.model_validate({"name": name, "sha256": digest(name), **fields})


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at the burst, less one


def test_rate_limits_are_per_key_and_follow_a_changed_keys_file() -> None:
    limits = RateLimits()
    limited, other = key(rate=1, burst=2), key("team-b")
    limits.check(limited, 0.0)
    limits.check(limited, 0.0)
    with pytest.raises(Shed) as error:
        limits.check(limited, 0.0)
    assert error.value.code == "rate_limited" and error.value.headers() == {"Retry-After": "1"}
    for _ in range(100):
        limits.check(other, 0.0)  # no rate: not limited
    limits.check(key(rate=1, burst=5), 0.0)  # reloaded with a larger burst: a new, full bucket


def test_a_burst_without_a_rate_is_refused_and_the_default_burst_is_the_rate() -> None:
    with pytest.raises(ValueError, match="burst needs a rate"):
        parse_keys(f"keys: [{{name: a, sha256: {digest('a')}, burst: 3}}]")
    assert key(rate=2.5).effective_burst == 3 and key(rate=0.1).effective_burst == 1


def test_in_flight_bounds_in_all_and_per_key() -> None:
    serving = InFlight(limit=3, per_key_limit=2)
    a, b = key("a"), key("b")
    with serving.slot(a), serving.slot(a):
        with pytest.raises(Shed) as over_key:  # the key's own excess: 429
            with serving.slot(a):
                pass
        assert over_key.value.status == 429 and over_key.value.code == "too_many_in_flight"
        assert over_key.value.headers() == {"Retry-After": "1"}
        with serving.slot(b):
            with pytest.raises(Unavailable) as over_all:  # the gateway's bound: 503
                with serving.slot(b):
                    pass
            assert over_all.value.status == 503 and over_all.value.code == "too_many_in_flight"
    assert serving.total == 0 and serving.by_key == {}


def test_generation_limits_are_the_ones_the_operator_gives_its_pods() -> None:
    spec = {"model": {"name": "tiny"}, "gpuClass": "cpu", "generation": {"maxSteps": 50, "maxWidth": 256}}
    resource = resource_from_object({"metadata": {"namespace": "a", "name": "r"}, "spec": spec})
    assert resource is not None and resource.generation is not None
    limits = resource.generation
    assert (limits.max_steps, limits.max_width, limits.max_height) == (50, 256, 512)  # height: the catalog model's


async def test_a_repeat_waits_for_the_first_answer_and_another_body_is_refused() -> None:
    answers = IdempotentAnswers()
    release = asyncio.Event()
    runs = 0

    async def produce() -> Answer:
        nonlocal runs
        runs += 1
        await release.wait()
        return Answer(200, b"image")

    first = asyncio.ensure_future(answers.answer("a", "k1", b"{}", produce))
    repeat = asyncio.ensure_future(answers.answer("a", "k1", b"{}", produce))
    await asyncio.sleep(0)
    release.set()
    assert (await first).content == (await repeat).content == b"image" and runs == 1
    assert (REPLAYED_HEADER, "true") in (await repeat).headers
    assert (await answers.answer("b", "k1", b"{}", produce)).headers == ()  # another API key's own
    with pytest.raises(InvalidRequest) as error:
        await answers.answer("a", "k1", b'{"other": 1}', produce)
    assert error.value.code == "idempotency_key_reused"


async def test_a_repeat_runs_when_the_first_client_left_and_refusals_are_not_kept() -> None:
    answers = IdempotentAnswers()
    started = asyncio.Event()

    async def hang() -> Answer:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    first = asyncio.ensure_future(answers.answer("a", "k", b"{}", hang))
    await started.wait()
    repeat = asyncio.ensure_future(answers.answer("a", "k", b"{}", lambda: _answer(200)))
    await asyncio.sleep(0)
    first.cancel()
    assert (await repeat).status == 200 and (REPLAYED_HEADER, "true") not in (await repeat).headers

    async def shed() -> Answer:
        raise Shed("full", code="queue_full", retry_after=1)

    with pytest.raises(Shed):
        await answers.answer("a", "k2", b"{}", shed)
    assert (await answers.answer("a", "k2", b"{}", lambda: _answer(200))).status == 200  # a new request

    async def broke() -> Answer:
        raise BadGateway("the pod failed", code="upstream_failed")

    with pytest.raises(BadGateway):
        await answers.answer("a", "k3", b"{}", broke)
    assert (await answers.answer("a", "k3", b"{}", lambda: _answer(200))).status == 502  # it may have run


async def _answer(status: int, size: int = 10) -> Answer:
    return Answer(status, b"x" * size)


async def test_answers_expire_after_the_window_and_their_bytes_are_bounded() -> None:
    now = [0.0]
    answers = IdempotentAnswers(window=60, max_bytes=3200, clock=lambda: now[0])
    for index in range(10):
        await answers.answer("a", f"k{index}", b"{}", lambda: _answer(200, 1000))
    assert len(answers) == 2 and answers.kept_bytes <= 3200  # 1,515 bytes each: the oldest went first
    replay = await answers.answer("a", "k9", b"{}", lambda: _answer(500))
    assert replay.status == 200
    now[0] = 61
    assert (await answers.answer("a", "k9", b"{}", lambda: _answer(201))).status == 201  # expired: new
    assert (await answers.answer("a", "big", b"{}", lambda: _answer(200, 10_000))).status == 200
    assert all(slot != ("a", "big") for slot in answers._kept)  # too large to keep
    with pytest.raises(InvalidRequest):
        await answers.answer("a", "", b"{}", lambda: _answer(200))
