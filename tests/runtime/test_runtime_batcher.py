"""The batcher on its own, with an engine that records its calls (no model, no HTTP)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import pytest

from imagefleet import metrics as names
from imagefleet_runtime.batcher import Batcher, BatchKey, ImageSpec
from imagefleet_runtime.errors import Broken, ContentFiltered, DeviceFailure, Draining, OutOfMemory, PipelineFailed, QueueFull
from imagefleet_runtime.metrics import Metrics

SMALL = BatchKey(64, 64, 4, 7.0)
LARGE = BatchKey(128, 128, 4, 7.0)


class RecordingEngine:
    """Returns b"<seed>" per image; OOMs above `fits` images or on `poison` seeds; `gate` holds calls."""

    def __init__(self, *, fits: int = 1000, poison: frozenset[int] = frozenset()) -> None:
        self.calls: list[tuple[BatchKey, list[int]]] = []
        self.entered = 0
        self.fits = fits
        self.poison = poison
        self.gate = threading.Event()

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        self.entered += 1
        assert self.gate.wait(timeout=10), "test never opened the gate"
        seeds = [image.seed for image in images]
        self.calls.append((key, seeds))
        if len(images) > self.fits or self.poison.intersection(seeds):
            raise OutOfMemory(f"{len(images)} images do not fit")
        return [str(seed).encode() for seed in seeds]


def images(*seeds: int) -> list[ImageSpec]:
    return [ImageSpec("p", None, seed) for seed in seeds]


async def until(predicate: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.005)


def queue_depth(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(names.QUEUE_DEPTH)


def make(engine: RecordingEngine, metrics: Metrics, *, max_batch_size: int = 4, queue_size: int = 16) -> Batcher:
    batcher = Batcher(engine, metrics, max_batch_size=max_batch_size,
                      queue_size=queue_size, initial_batch_seconds=2.0, call_timeout_seconds=60)
    batcher.start()
    return batcher


def submit(batcher: Batcher, seeds: Sequence[int], key: BatchKey = SMALL) -> list[asyncio.Task[list[bytes]]]:
    return [asyncio.create_task(batcher.submit(key, images(seed))) for seed in seeds]


async def test_groups_compatible_requests_and_answers_each() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics)
    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    rest = [asyncio.create_task(batcher.submit(key, images(seed)))
            for seed, key in [(1, SMALL), (2, LARGE), (3, SMALL), (4, SMALL), (5, LARGE), (6, SMALL), (7, SMALL)]]
    await until(lambda: queue_depth(metrics) == 7, "seven waiting requests")
    engine.gate.set()
    assert await asyncio.gather(*first, *rest) == [[str(seed).encode()] for seed in range(8)]
    # Oldest first; a batch takes only its own key, at most 4 images; the skipped LARGE ones run next.
    assert engine.calls == [(SMALL, [0]), (SMALL, [1, 3, 4, 6]), (LARGE, [2, 5]), (SMALL, [7])]
    assert queue_depth(metrics) == 0
    await batcher.close()


async def test_request_with_more_images_than_a_batch_still_runs() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    engine.gate.set()
    batcher = make(engine, metrics, max_batch_size=2)
    assert await batcher.submit(SMALL, images(1, 2, 3)) == [b"1", b"2", b"3"]
    assert engine.calls == [(SMALL, [1, 2, 3])]
    await batcher.close()


async def test_out_of_memory_splits_the_batch_until_it_fits() -> None:
    engine, metrics = RecordingEngine(fits=2), Metrics()
    batcher = make(engine, metrics, max_batch_size=8)
    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    rest = submit(batcher, [1, 2, 3, 4, 5])
    await until(lambda: queue_depth(metrics) == 5, "five waiting requests")
    engine.gate.set()
    assert await asyncio.gather(*first, *rest) == [[str(seed).encode()] for seed in range(6)]
    assert [seeds for _, seeds in engine.calls] == [[0], [1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [3], [4, 5]]
    assert metrics.registry.get_sample_value(names.BATCH_SIZE + "_sum") == 6  # each request once
    assert metrics.registry.get_sample_value(names.BATCH_SIZE + "_count") == 4  # calls that succeeded
    await batcher.close()


async def test_image_that_never_fits_fails_alone_with_503() -> None:
    engine, metrics = RecordingEngine(poison=frozenset({2})), Metrics()
    batcher = make(engine, metrics)
    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    rest = submit(batcher, [1, 2, 3])
    await until(lambda: queue_depth(metrics) == 3, "three waiting requests")
    engine.gate.set()
    outcomes = await asyncio.gather(*first, *rest, return_exceptions=True)
    assert outcomes[0] == [b"0"] and outcomes[1] == [b"1"] and outcomes[3] == [b"3"]
    assert isinstance(outcomes[2], OutOfMemory) and outcomes[2].status == 503
    await batcher.close()


async def test_full_queue_refuses_with_retry_after() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics, max_batch_size=1, queue_size=2)
    running = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    waiting = submit(batcher, [1, 2])
    await until(lambda: queue_depth(metrics) == 2, "two waiting requests")
    with pytest.raises(QueueFull) as refused:
        await batcher.submit(SMALL, images(3))
    # Two waiting, the refused one's own image, and the one running, at the initial 2 s per call.
    assert refused.value.retry_after == pytest.approx(8.0)
    assert refused.value.headers() == {"Retry-After": str(math.ceil(refused.value.retry_after))}
    engine.gate.set()
    assert await asyncio.gather(*running, *waiting) == [[b"0"], [b"1"], [b"2"]]
    await batcher.close()


async def test_drain_answers_everything_then_refuses() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics, max_batch_size=1)
    tasks = submit(batcher, [0, 1, 2])
    await until(lambda: engine.entered == 1 and queue_depth(metrics) == 2, "one running, two waiting")
    drained = asyncio.create_task(batcher.drain())
    await asyncio.sleep(0)  # one loop turn: the drain task starts and refuses from now on
    with pytest.raises(Draining):
        await batcher.submit(SMALL, images(9))
    assert not drained.done()
    engine.gate.set()
    await asyncio.wait_for(drained, timeout=10)
    assert [task.result() for task in tasks] == [[b"0"], [b"1"], [b"2"]]
    await batcher.close()


async def test_forced_close_answers_unfinished_requests() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics, max_batch_size=1)
    tasks = submit(batcher, [0, 1, 2])
    await until(lambda: engine.entered == 1 and queue_depth(metrics) == 2, "one running, two waiting")
    await batcher.close()
    engine.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, Draining) for outcome in outcomes), outcomes


async def test_idle_engine_starts_at_once_and_every_waiting_request_joins_the_next_batch() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics, max_batch_size=3)
    started = time.monotonic()
    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    assert time.monotonic() - started < 0.3, "an idle engine waited for companions"
    early = submit(batcher, [1, 2])
    await until(lambda: queue_depth(metrics) == 2, "two waiting requests")
    await asyncio.sleep(0.4)  # arriving much later than the others still joins them: they all wait
    late = submit(batcher, [3, 4])
    await until(lambda: queue_depth(metrics) == 4, "four waiting requests")
    engine.gate.set()
    await asyncio.gather(*first, *early, *late)
    # A backlog runs in full batches (3 images), oldest first.
    assert [seeds for _, seeds in engine.calls] == [[0], [1, 2, 3], [4]]
    await batcher.close()


async def test_queue_bound_counts_images() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    batcher = make(engine, metrics, max_batch_size=2, queue_size=4)
    running = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    three = asyncio.create_task(batcher.submit(SMALL, images(1, 2, 3)))
    await until(lambda: queue_depth(metrics) == 1, "one waiting request of three images")
    with pytest.raises(QueueFull) as refused:
        await batcher.submit(SMALL, images(4, 5))
    # Five images ahead in batches of two (three calls), plus the running call, at 4 s each (the warm-up's
    # 2 s for one image, scaled up to a full call of two until one has run).
    assert refused.value.retry_after == pytest.approx(16.0)
    one = asyncio.create_task(batcher.submit(SMALL, images(6)))
    engine.gate.set()
    assert await asyncio.gather(*running, three, one) == [[b"0"], [b"1", b"2", b"3"], [b"6"]]
    # Alone in an empty queue, a request of more images than the bound still gets in.
    assert await batcher.submit(SMALL, images(7, 8, 9, 10, 11)) == [b"7", b"8", b"9", b"10", b"11"]
    await batcher.close()


class FaultyEngine(RecordingEngine):
    """Raises `fault` on the seeds in `faulty`."""

    def __init__(self, fault: Exception, faulty: frozenset[int]) -> None:
        super().__init__()
        self.fault = fault
        self.faulty = faulty

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        if self.faulty.intersection(image.seed for image in images):
            raise self.fault
        return super().generate(key, images)


async def test_pipeline_exception_fails_its_batch_with_500_and_is_counted() -> None:
    engine, metrics = FaultyEngine(ValueError("NaN in latents"), frozenset({1})), Metrics()
    engine.gate.set()
    batcher = make(engine, metrics)
    with pytest.raises(PipelineFailed, match="ValueError: NaN in latents") as failed:
        await batcher.submit(SMALL, images(1))
    assert failed.value.status == 500 and failed.value.code == "pipeline_error"
    assert metrics.registry.get_sample_value(names.PIPELINE_ERRORS_TOTAL, {"kind": "error"}) == 1
    assert await batcher.submit(SMALL, images(2)) == [b"2"]  # the next batch runs as usual
    await batcher.close()


async def test_device_failure_answers_everything_with_503_and_breaks() -> None:
    engine, metrics = FaultyEngine(DeviceFailure("CUDA error: an illegal memory access"), frozenset({0})), Metrics()
    reasons: list[str] = []
    batcher = Batcher(engine, metrics, max_batch_size=1, queue_size=8,
                      initial_batch_seconds=1.0, call_timeout_seconds=60, on_broken=reasons.append)
    batcher.start()
    tasks = submit(batcher, [0, 1, 2])
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, Broken) and outcome.status == 503 for outcome in outcomes), outcomes
    assert reasons and "illegal memory access" in reasons[0]
    assert metrics.registry.get_sample_value(names.PIPELINE_ERRORS_TOTAL, {"kind": "device"}) == 1
    with pytest.raises(Broken):
        await batcher.submit(SMALL, images(3))
    assert engine.calls == []  # nothing ran after the failure
    await batcher.close()


async def test_call_past_the_watchdog_deadline_breaks() -> None:
    engine, metrics = RecordingEngine(), Metrics()
    reasons: list[str] = []
    batcher = Batcher(engine, metrics, max_batch_size=1, queue_size=8,
                      initial_batch_seconds=1.0, call_timeout_seconds=0.2, on_broken=reasons.append)
    batcher.start()
    tasks = submit(batcher, [0, 1])  # the gate stays shut: the first call hangs
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, Broken) for outcome in outcomes), outcomes
    assert reasons and "watchdog" in reasons[0]
    assert metrics.registry.get_sample_value(names.PIPELINE_ERRORS_TOTAL, {"kind": "timeout"}) == 1
    engine.gate.set()  # let the hung thread end
    await batcher.close()


class Scratch:
    """Stands in for a pipeline call's activations."""


class MemoryLimitedEngine(RecordingEngine):
    """Runs out of memory above `budget` images x pixels. Each call holds a Scratch in its frame, as a
    pipeline holds tensors; a retry that starts while the failed call's Scratch is alive fails the test."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.failed_scratch: weakref.ref[Scratch] | None = None
        self.retried_while_held = 0

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        if self.failed_scratch is not None and self.failed_scratch() is not None:
            self.retried_while_held += 1
        scratch = Scratch()
        if len(images) * key.pixels > self.budget:
            self.failed_scratch = weakref.ref(scratch)
            raise OutOfMemory(f"{len(images)} images of {key.width}x{key.height} do not fit")
        return super().generate(key, images)


async def test_out_of_memory_frees_first_then_plans_under_what_fitted() -> None:
    engine, metrics = MemoryLimitedEngine(budget=3 * SMALL.pixels), Metrics()
    batcher = make(engine, metrics, max_batch_size=8, queue_size=64)

    def splits() -> float | None:
        return metrics.registry.get_sample_value(names.OOM_SPLITS_TOTAL)

    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    wave = submit(batcher, range(1, 8))
    await until(lambda: queue_depth(metrics) == 7, "seven waiting requests")
    engine.gate.set()
    assert await asyncio.gather(*first, *wave) == [[str(seed).encode()] for seed in range(8)]
    after_first = splits()
    assert after_first is not None and after_first >= 1
    assert metrics.registry.get_sample_value(names.FITTING_BATCH_PIXELS) == 3 * SMALL.pixels
    for start in (100, 200, 300):  # more waves of requests than fit one call: no more out-of-memory errors
        results = await asyncio.gather(*submit(batcher, range(start, start + 12)))
        assert results == [[str(seed).encode()] for seed in range(start, start + 12)]
    assert splits() == after_first
    assert max(len(seeds) for _, seeds in engine.calls[-12:]) == 3  # planned at the bound, not below it
    assert engine.retried_while_held == 0, "a retry ran while the failed call's memory was still held"
    await batcher.close()


class FilteringEngine(RecordingEngine):
    """Flags the images with seeds in `flagged`, as a safety checker does."""

    def __init__(self, flagged: frozenset[int]) -> None:
        super().__init__()
        self.flagged = flagged
        self.gate.set()

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
        made: list[object] = list(super().generate(key, images))
        return [ContentFiltered("flagged") if image.seed in self.flagged else out for image, out in zip(images, made)]


async def test_a_flagged_image_fails_only_its_own_request() -> None:
    engine, metrics = FilteringEngine(frozenset({2})), Metrics()
    batcher = make(engine, metrics, max_batch_size=8)
    outcomes = await asyncio.gather(batcher.submit(SMALL, images(1)), batcher.submit(SMALL, images(2, 3)),
                                    return_exceptions=True)
    assert engine.calls == [(SMALL, [1]), (SMALL, [2, 3])] or engine.calls == [(SMALL, [1, 2, 3])]
    assert outcomes[0] == [b"1"]
    assert isinstance(outcomes[1], ContentFiltered) and outcomes[1].status == 400
    await batcher.close()


class TimedEngine(RecordingEngine):
    """Takes `per_image` seconds per image once the gate opens, like a card whose call grows with the batch."""

    def __init__(self, per_image: float) -> None:
        super().__init__()
        self.per_image = per_image

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        made = super().generate(key, images)
        time.sleep(self.per_image * len(images))
        return made


async def test_batch_seconds_is_the_time_of_a_full_call() -> None:
    """What the gateway and Retry-After multiply by batches ahead: a backlog runs in full calls, so the
    figure is a full call's, never an average dragged down by calls of one image."""
    engine, metrics = TimedEngine(per_image=0.1), Metrics()
    batcher = make(engine, metrics, max_batch_size=4)
    assert batcher.batch_seconds == 8.0  # the warm-up's one-image estimate (2 s) scaled up to 4 images
    first = submit(batcher, [0])
    await until(lambda: engine.entered == 1, "the first call to start")
    backlog = submit(batcher, [1, 2, 3, 4])
    await until(lambda: queue_depth(metrics) == 4, "four waiting requests")
    engine.gate.set()
    await asyncio.gather(*first, *backlog)
    assert [seeds for _, seeds in engine.calls] == [[0], [1, 2, 3, 4]]
    # The one full call (4 x 0.1 s) is the figure, not the average with the 0.1 s call of one image.
    assert 0.4 <= batcher.batch_seconds < 0.6
    for _ in range(3):  # calls of one image afterwards do not pull it down
        await asyncio.gather(*submit(batcher, [5]))
    assert 0.4 <= batcher.batch_seconds < 0.6
    await batcher.close()
