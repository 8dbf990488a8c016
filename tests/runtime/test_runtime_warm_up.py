"""The warm-up runs the largest call a request can make before the pod is Ready (so the peak memory
covers it), and a largest call that does not fit fails the startup with what to change."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from imagefleet import metrics as names
from imagefleet.cost import builtin_plan
from imagefleet_runtime.app import create_app, load_engine
from imagefleet_runtime.batcher import BatchKey, ImageSpec
from imagefleet_runtime.engines import CFG_GUIDANCE, WARM_UP_STEPS, ServingEngine
from imagefleet_runtime.memory import MemoryReading
from imagefleet_runtime.settings import Settings
from tests.helpers import wait_until

from .support import sample, scrape


class Recording:
    """The real engine, recording each call: its key, its number of images and how long it took."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine
        self.native_size = engine.native_size
        self.size_multiple = engine.size_multiple
        self.summary = engine.summary
        self.output_formats = engine.output_formats
        self.calls: list[tuple[BatchKey, int, float]] = []

    def memory(self) -> MemoryReading:
        return self.engine.memory()

    def encode(self, image: object, output_format: str) -> bytes:
        return self.engine.encode(image, output_format)

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
        started = time.monotonic()
        made = self.engine.generate(key, images)
        self.calls.append((key, len(images), time.monotonic() - started))
        return made


def test_tiny_warms_up_at_the_largest_call_before_ready(caplog: pytest.LogCaptureFixture) -> None:
    """Tiny on CPU; guidance is off by default, yet the largest call runs with it on (a request may ask)."""
    settings = Settings(model="tiny", device="cpu", max_batch_size=3, max_width=128, max_height=96,
                        default_steps=4, default_guidance_scale=1.0)
    engines: list[Recording] = []

    def load(given: Settings) -> Recording:
        engines.append(Recording(load_engine(given)))
        return engines[0]

    caplog.set_level(logging.INFO, logger="imagefleet_runtime.engines")
    with TestClient(create_app(settings, load=load)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=120, interval=0.1, message="/readyz")
        calls = engines[0].calls
        assert [(key, images) for key, images, _ in calls] == [
            (BatchKey(128, 96, WARM_UP_STEPS, CFG_GUIDANCE), 3),  # the largest call: memory
            (BatchKey(64, 64, WARM_UP_STEPS, 1.0), 3),  # a full call at the defaults: the time estimate
        ]
        # The estimate is one full call at the defaults, the timed warm-up call scaled up to 4 steps.
        batch_seconds = client.get("/v1/load").json()["batch_seconds"]
        assert batch_seconds == pytest.approx(calls[1][2] * 4 / WARM_UP_STEPS, rel=0.1)
        text = scrape(client)
        peak = sample(text, names.MEMORY_BYTES, kind="peak", source="process")
        assert peak >= sample(text, names.MEMORY_BYTES, kind="allocated", source="process") > 0
    assert "warm-up: the largest call, 3 image(s) at 128x96, 2 steps, guidance 7" in caplog.text
    assert "MiB (process)" in caplog.text


def test_largest_call_that_does_not_fit_fails_the_startup_with_what_to_change() -> None:
    """The emulated engine runs out of memory where the operator's estimate says the card would: SDXL
    at 1024x1024 on an L4, one image more per call than fits. The pod never turns Ready."""
    plan = builtin_plan(model="sdxl", gpu_class="l4-24gb", precision="fp16")
    too_many = next(n for n in range(1, 64) if not plan.fits(n, 1024, 1024))
    assert plan.fits(too_many - 1, 1024, 1024)
    settings = Settings(engine="emulated", gpu_class="l4-24gb", model="sdxl", precision="fp16",
                        emulation_speedup=1000.0, max_batch_size=too_many, default_width=512, default_height=512)
    fatal: list[str] = []
    with TestClient(create_app(settings, on_fatal=fatal.append)) as client:
        wait_until(lambda: bool(fatal), timeout=30, interval=0.05, message="the startup to fail")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/images/generations", json={"prompt": "a quay"}).status_code == 503
        assert sample(scrape(client), names.MODEL_READY) == 0
    message = fatal[0]
    assert f"{too_many} image(s) of 1024x1024" in message and "does not fit" in message
    assert "lower max_batch_size or max_width/max_height" in message
    assert health.json()["detail"] == message
