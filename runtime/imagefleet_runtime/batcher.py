"""Dynamic batching: a bounded queue and one worker that runs compatible requests as one pipeline call.

Requests are compatible when they share size, steps and guidance (`BatchKey`). A batch opens
with the oldest waiting request and takes compatible ones, oldest first, until it holds
`max_batch_size` images or `max_delay` has passed since that oldest request arrived. One thread
runs the pipeline (one pipeline is not safe to call concurrently). An out-of-memory error splits
the call in halves and retries; only a single image that still does not fit fails, with a 503.
Every accepted request gets an answer: its images or an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from .errors import Draining, OutOfMemory, QueueFull, RuntimeAPIError
from .metrics import Metrics

logger = logging.getLogger(__name__)

# Weight of the newest pipeline call in the running average behind Retry-After.
BATCH_TIME_SMOOTHING = 0.2


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to run in one pipeline call."""

    width: int
    height: int
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class ImageSpec:
    """One image to make."""

    prompt: str
    negative_prompt: str | None
    seed: int


class Engine(Protocol):
    """What the batcher runs: one pipeline call for images sharing a key, PNG bytes in order."""

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[bytes]:
        """Raise errors.OutOfMemory when the call does not fit the accelerator."""
        ...


@dataclass(eq=False)
class Job:
    """One accepted request waiting for its images."""

    key: BatchKey
    images: list[ImageSpec]
    arrived: float = field(default_factory=time.monotonic)
    result: asyncio.Future[list[bytes]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Owns the queue and the worker; `submit` is called from request handlers."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_delay_seconds: float,
        queue_size: int,
        initial_batch_seconds: float,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_delay = max_delay_seconds
        self._queue_size = queue_size
        self._batch_seconds = initial_batch_seconds
        self._pending: deque[Job] = deque()
        self._changed = asyncio.Event()  # set when a job arrives, a batch ends or draining starts
        self._in_hand: list[Job] = []  # the batch being collected or run
        self._draining = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def submit(self, key: BatchKey, images: list[ImageSpec]) -> list[bytes]:
        """Queue a request and wait for its images (PNG bytes, in order)."""
        if self._draining:
            raise Draining("the server is shutting down and accepts no new requests; retry on another replica")
        if len(self._pending) >= self._queue_size:
            raise QueueFull(
                f"the queue is full ({len(self._pending)} requests waiting); retry later",
                retry_after=self._retry_after(),
            )
        job = Job(key, images)
        self._pending.append(job)
        self._metrics.queue_depth.set(len(self._pending))
        self._changed.set()
        return await job.result

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
        for job in [*self._in_hand, *self._pending]:
            _answer(job, Draining("the server stopped before this request ran"))
        self._in_hand.clear()
        self._pending.clear()
        self._metrics.queue_depth.set(0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        """Requests waiting, not yet in a batch."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Requests taken into the batch being collected or run."""
        return len(self._in_hand)

    @property
    def batch_seconds(self) -> float:
        """The running average of one pipeline call, in seconds."""
        return self._batch_seconds

    def _retry_after(self) -> float:
        batches_ahead = len(self._pending) / self._max_batch_size + 1
        return batches_ahead * self._batch_seconds

    async def _work(self) -> None:
        while True:
            await self._collect_batch()
            await self._run(self._in_hand)
            self._in_hand = []
            self._changed.set()

    async def _collect_batch(self) -> None:
        """Fill `_in_hand` with the next batch (jobs leave the queue as they join it)."""
        while not self._pending:
            self._changed.clear()
            await self._changed.wait()
        first = self._pending[0]
        deadline = first.arrived + self._max_delay
        while True:
            self._take_compatible(first.key)
            remaining = deadline - time.monotonic()
            if self._image_count(self._in_hand) >= self._max_batch_size or remaining <= 0 or self._draining:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                self._take_compatible(first.key)
                return

    def _take_compatible(self, key: BatchKey) -> None:
        """Move waiting jobs with `key` into the batch in hand, oldest first, while they fit."""
        batch = self._in_hand
        images = self._image_count(batch)
        for job in list(self._pending):
            if job.key != key:
                continue
            if batch and images + len(job.images) > self._max_batch_size:
                break
            self._pending.remove(job)
            batch.append(job)
            images += len(job.images)
        self._metrics.queue_depth.set(len(self._pending))

    @staticmethod
    def _image_count(batch: list[Job]) -> int:
        return sum(len(job.images) for job in batch)

    async def _run(self, batch: list[Job]) -> None:
        owners = [index for index, job in enumerate(batch) for _ in job.images]
        specs = [spec for job in batch for spec in job.images]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._generate_splitting, batch[0].key, specs, owners)
        except Exception as error:  # noqa: BLE001 - every accepted request must get an answer
            logger.exception("pipeline call for %d requests failed", len(batch))
            for job in batch:
                _answer(job, error)
            return
        for index, job in enumerate(batch):
            mine = [output for output, owner in zip(outputs, owners, strict=True) if owner == index]
            failure = next((output for output in mine if isinstance(output, RuntimeAPIError)), None)
            _answer(job, failure if failure is not None else [out for out in mine if isinstance(out, bytes)])

    def _generate_splitting(
        self, key: BatchKey, specs: list[ImageSpec], owners: list[int]
    ) -> list[bytes | OutOfMemory]:
        """Run one pipeline call (in the pipeline thread); on OOM, halve it and try each half."""
        started = time.monotonic()
        try:
            images = self._engine.generate(key, specs)
        except OutOfMemory as error:
            if len(specs) == 1:
                return [error]
            half = len(specs) // 2
            return self._generate_splitting(key, specs[:half], owners[:half]) + self._generate_splitting(
                key, specs[half:], owners[half:]
            )
        elapsed = time.monotonic() - started
        self._metrics.batch_duration.observe(elapsed)
        self._metrics.batch_size.observe(len(set(owners)))
        self._batch_seconds += BATCH_TIME_SMOOTHING * (elapsed - self._batch_seconds)
        return list(images)


def _answer(job: Job, outcome: list[bytes] | BaseException) -> None:
    """Resolve a job's future (a no-op if its handler already went away)."""
    if job.result.done():
        return
    if isinstance(outcome, BaseException):
        job.result.set_exception(outcome)
    else:
        job.result.set_result(outcome)
