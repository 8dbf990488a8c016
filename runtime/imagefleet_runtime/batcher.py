"""Continuous batching: a bounded queue and one worker that runs compatible requests as one pipeline call.

Requests are compatible when they share size, steps, guidance and, in pool mode, checkpoint and
adapters (`BatchKey`); a pool engine makes those resident (`prepare`) before each call. When the engine is
idle, a request starts at once. While a batch runs, the requests that arrive gather: when the
engine frees, the next batch opens with the oldest waiting request and takes the compatible ones,
oldest first, up to `max_batch_size` images. The engine never waits for a batch to fill, and no
waiting request is left for a later call while there is room in this one (a backlog runs in full
batches, so throughput grows with load instead of falling). One thread runs the pipeline (one
pipeline is not safe to call concurrently).

Faults: an out-of-memory error is handled after its `except` block has ended (so the failed
call's tensors, held by the traceback, are freed first); the call is split in halves and retried,
and the largest load (images x pixels) that fitted becomes the bound every later batch is planned
under. A DeviceFailure (a sticky CUDA error) or a call past the watchdog deadline breaks the
batcher: it answers everything with a 503 and calls `on_broken`, which fails the health checks.
Any other exception fails only its batch, with a 500. Every accepted request gets an answer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from imagefleet.residency import Snapshot, Touch, adapter_key, checkpoint_key

from .errors import Broken, DeviceFailure, Draining, OutOfMemory, PipelineFailed, QueueFull, RuntimeAPIError
from .metrics import Metrics

logger = logging.getLogger(__name__)

# Weight of the newest pipeline call in the running average of calls of its size.
BATCH_TIME_SMOOTHING = 0.2


@dataclass(frozen=True)
class CheckpointRef:
    """Pool mode: the weights a request runs on (catalog name, Hugging Face repo id or a local directory)."""

    name: str
    revision: str | None = None

    @property
    def key(self) -> str:
        """The name residency and the metrics know it by."""
        return checkpoint_key(self.name, self.revision)


@dataclass(frozen=True)
class AdapterRef:
    """Pool mode: a LoRA adapter (Hugging Face repo id or local path, optionally one file of it) and its scale."""

    name: str
    weight_name: str | None = None
    scale: float = 1.0

    @property
    def key(self) -> str:
        """The name residency and the metrics know it by."""
        return adapter_key(self.name, self.weight_name)


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to run in one pipeline call."""

    width: int
    height: int
    steps: int
    guidance_scale: float
    # Pool mode only: None is the pool's base checkpoint.
    checkpoint: CheckpointRef | None = None
    adapters: tuple[AdapterRef, ...] = ()

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class ImageSpec:
    """One image to make."""

    prompt: str
    negative_prompt: str | None
    seed: int


class Engine(Protocol):
    """What the batcher runs: one pipeline call for images sharing a key, one image object each, in order.

    The images are whatever the engine's encoder takes (PIL images for diffusers); the batcher
    only passes them on. An image that failed on its own (the safety checker flagged it) is a
    RuntimeAPIError in its place: its request gets that error, the others their images.
    """

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
        """Raise errors.OutOfMemory when the call does not fit, errors.DeviceFailure when the device is lost."""
        ...


class PoolEngine(Engine, Protocol):
    """An engine of a pool pod: it makes a key's checkpoint and adapters resident before the call."""

    def prepare(self, key: BatchKey) -> Prepared:
        """Move what the key needs onto the device (evicting by LRU); a RuntimeAPIError names what is refused."""
        ...


@dataclass(frozen=True)
class Prepared:
    """What `prepare` did: the residency touch and the seconds each of its moves took."""

    touch: Touch
    seconds: tuple[float, ...]
    # What is resident after it.
    resident: Snapshot


@dataclass(eq=False)
class Job:
    """One accepted request waiting for its images."""

    key: BatchKey
    images: list[ImageSpec]
    arrived: float = field(default_factory=time.monotonic)
    result: asyncio.Future[list[object]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Owns the queue and the worker; `submit` is called from request handlers."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        max_batch_size: int,
        queue_size: int,
        initial_batch_seconds: float,
        call_timeout_seconds: float,
        on_broken: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._queue_size = queue_size  # in images
        # Running average of one call's seconds, per images in the call; seeded with the warm-up's estimate.
        self._call_seconds: dict[int, float] = {1: initial_batch_seconds}
        self._call_timeout = call_timeout_seconds
        self._on_broken = on_broken
        self._pending: deque[Job] = deque()
        self._changed = asyncio.Event()  # set when a job arrives, a batch ends or draining starts
        self._in_hand: list[Job] = []  # the batch being run
        self._draining = False
        self._broken: str | None = None
        # Loads (images x pixels in one call): the smallest that ran out of memory, and the largest
        # below it that fitted; batches are planned under the latter once the former is known.
        self._failed_load: int | None = None
        self._fitting_load = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    @property
    def waiting_images(self) -> int:
        return sum(len(job.images) for job in self._pending)

    async def submit(self, key: BatchKey, images: list[ImageSpec]) -> list[object]:
        """Queue a request and wait for its images (in order)."""
        if self._broken is not None:
            raise Broken(f"the accelerator is out of service ({self._broken}); retry on another replica")
        if self._draining:
            raise Draining("the server is shutting down and accepts no new requests; retry on another replica")
        waiting = self.waiting_images
        # A request alone in the queue always gets in, so one of more images than the bound can still run.
        if waiting and waiting + len(images) > self._queue_size:
            raise QueueFull(
                f"the queue is full ({waiting} images waiting, room for {self._queue_size}); retry later",
                retry_after=self._retry_after(waiting + len(images)),
            )
        job = Job(key, images)
        self._pending.append(job)
        self._metrics.queue_depth.set(len(self._pending))
        self._changed.set()
        try:
            return await job.result
        except asyncio.CancelledError:
            # The client left: a job still waiting is dropped before its batch runs.
            if job in self._pending:
                self._pending.remove(job)
                self._metrics.queue_depth.set(len(self._pending))
                self._metrics.abandoned.inc()
            raise

    async def drain(self) -> None:
        """Refuse new requests, then return once every accepted one has been answered."""
        self._draining = True
        self._changed.set()
        while self._pending or self._in_hand:
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        """Stop the worker; requests not yet answered (only after a forced exit) get a 503."""
        self._draining = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._answer_all(Draining("the server stopped before this request ran"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _answer_all(self, error: RuntimeAPIError) -> None:
        for job in [*self._in_hand, *self._pending]:
            _answer(job, error)
        self._in_hand.clear()
        self._pending.clear()
        self._metrics.queue_depth.set(0)
        self._changed.set()

    @property
    def running(self) -> int:
        """Requests taken into the batch being collected or run."""
        return len(self._in_hand)

    @property
    def batch_seconds(self) -> float:
        """Seconds of one full call (`max_batch_size` images): its running average once one has run; before
        that, the largest size that ran scaled up linearly (pessimistic: a call's fixed cost is counted again
        per image). A backlog runs in full calls, so this is what a wait is made of: an average over calls of
        any size would have a deep queue drain at the speed of batches of one."""
        size = max(n for n in self._call_seconds if n <= self._max_batch_size)
        return self._call_seconds[size] * self._max_batch_size / size

    def _retry_after(self, images_ahead: int) -> float:
        """Seconds until `images_ahead` waiting images have run, plus the batch now running."""
        batch = self._batch_limit(self._pending[0].key) if self._pending else self._max_batch_size
        return (-(-images_ahead // batch) + 1) * self.batch_seconds

    def _batch_limit(self, key: BatchKey) -> int:
        """Most images in one call at `key`: the setting, or fewer once an out-of-memory error taught a bound."""
        if self._failed_load is None:
            return self._max_batch_size
        return max(1, min(self._max_batch_size, self._fitting_load // key.pixels))

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._changed.clear()
                await self._changed.wait()
            self._in_hand = self._next_batch()
            try:
                await self._run(self._in_hand)
            except _Broken as broken:
                self._break(broken.kind, broken.reason)
                return
            self._in_hand = []
            self._changed.set()

    def _next_batch(self) -> list[Job]:
        """The oldest waiting job and the compatible ones after it, oldest first, while they fit."""
        first = self._pending[0]
        limit = self._batch_limit(first.key)
        batch: list[Job] = []
        images = 0
        for job in list(self._pending):
            if job.key != first.key:
                continue
            if batch and images + len(job.images) > limit:
                break
            self._pending.remove(job)
            batch.append(job)
            images += len(job.images)
        self._metrics.queue_depth.set(len(self._pending))
        return batch

    async def _run(self, batch: list[Job]) -> None:
        owners = [index for index, job in enumerate(batch) for _ in job.images]
        specs = [spec for job in batch for spec in job.images]
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, self._prepare_and_generate, batch[0].key, specs, owners, len(batch))
        try:
            outputs = await asyncio.wait_for(asyncio.shield(call), self._call_timeout)
        except TimeoutError:
            raise _Broken("timeout", f"a pipeline call ran past the watchdog deadline of {self._call_timeout:g} s") from None
        except DeviceFailure as error:
            raise _Broken("device", f"device failure: {error}") from None
        except RuntimeAPIError as error:  # refused before the call (a pool pod's bad adapter or checkpoint)
            for job in batch:
                _answer(job, error)
            return
        except Exception as error:  # noqa: BLE001 - every accepted request must get an answer
            logger.exception("pipeline call for %d requests failed", len(batch))
            self._metrics.pipeline_errors.labels("error").inc()
            failure = PipelineFailed(f"the pipeline failed: {type(error).__name__}: {error}")
            for job in batch:
                _answer(job, failure)
            return
        for index, job in enumerate(batch):
            mine = [output for output, owner in zip(outputs, owners, strict=True) if owner == index]
            failure = next((output for output in mine if isinstance(output, RuntimeAPIError)), None)
            _answer(job, failure if failure is not None else mine)

    def _break(self, kind: str, reason: str) -> None:
        """Out of service for good: answer everything with a 503, and tell the app (health checks fail)."""
        self._metrics.pipeline_errors.labels(kind).inc()
        logger.error("pipeline out of service: %s", reason)
        self._broken = reason
        self._answer_all(Broken(f"the accelerator is out of service ({reason}); retry on another replica"))
        self._on_broken(reason)

    def _prepare_and_generate(
        self, key: BatchKey, specs: list[ImageSpec], owners: list[int], requests: int
    ) -> list[object]:
        """In the pipeline thread: a pool engine makes the key resident first (counted per request), then the call."""
        prepare = getattr(self._engine, "prepare", None)
        if prepare is not None:
            self._metrics.record_residency(prepare(key), requests)
        return self._generate_splitting(key, specs, owners)

    def _generate_splitting(self, key: BatchKey, specs: list[ImageSpec], owners: list[int]) -> list[object]:
        """Run one pipeline call (in the pipeline thread); on OOM, free, halve it and try each half."""
        started = time.monotonic()
        failure: OutOfMemory | None = None
        try:
            images = self._engine.generate(key, specs)
        except OutOfMemory as error:
            failure = OutOfMemory(error.message)  # a copy without the traceback, which holds the call's tensors
        if failure is not None:
            gc.collect()  # tensors in reference cycles of the failed call's frames
            self._learn_failure(len(specs) * key.pixels)
            if len(specs) == 1:
                return [failure]
            self._metrics.oom_splits.inc()
            half = len(specs) // 2
            return self._generate_splitting(key, specs[:half], owners[:half]) + self._generate_splitting(
                key, specs[half:], owners[half:]
            )
        elapsed = time.monotonic() - started
        self._metrics.batch_duration.observe(elapsed)
        self._metrics.batch_size.observe(len(set(owners)))
        size = len(specs)
        average = self._call_seconds.get(size)
        self._call_seconds[size] = elapsed if average is None else average + BATCH_TIME_SMOOTHING * (elapsed - average)
        self._learn_fit(len(specs) * key.pixels)
        return list(images)

    def _learn_failure(self, load: int) -> None:
        if self._failed_load is None or load < self._failed_load:
            self._failed_load = load
        if self._fitting_load >= load:
            self._fitting_load = 0
        self._metrics.fitting_batch_pixels.set(self._fitting_load)

    def _learn_fit(self, load: int) -> None:
        if load > self._fitting_load and (self._failed_load is None or load < self._failed_load):
            self._fitting_load = load
            if self._failed_load is not None:
                self._metrics.fitting_batch_pixels.set(load)


class _Broken(Exception):
    """Raised inside the worker when the pipeline is out of service; `kind` labels the metric."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _answer(job: Job, outcome: list[object] | BaseException) -> None:
    """Resolve a job's future (a no-op if its handler already went away)."""
    if job.result.done():
        return
    if isinstance(outcome, BaseException):
        job.result.set_exception(outcome)
    else:
        job.result.set_result(outcome)
