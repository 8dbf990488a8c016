"""Faults through the real app (in process), with an engine that injects them around the emulated one:
a pipeline exception is a 500 in the OpenAI shape and a metric; a sticky device error or a hung call
fails /readyz and /healthz (the liveness probe then restarts the pod)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagefleet import metrics as names
from imagefleet_runtime.app import create_app
from imagefleet_runtime.batcher import BatchKey, ImageSpec
from imagefleet_runtime.emulated.engine import EmulatedEngine, load_emulated
from imagefleet_runtime.errors import DeviceFailure
from imagefleet_runtime.settings import Settings
from tests.helpers import wait_until

from .support import sample, scrape

SETTINGS: dict[str, Any] = {"engine": "emulated", "gpu_class": "h100-80gb", "model": "sd15", "precision": "fp16",
                            "emulation_speedup": 1000.0, "default_steps": 4, "max_batch_size": 4}


class FaultInjecting(EmulatedEngine):
    """The emulated engine, but a prompt names a fault: "raise", "device" or "hang"."""

    release = threading.Event()

    def generate(self, key: BatchKey, images: Sequence[ImageSpec]) -> list[object]:
        prompts = {image.prompt for image in images}
        if "raise" in prompts:
            raise ValueError("NaN in the latents")
        if "device" in prompts:
            raise DeviceFailure("CUDA error: an illegal memory access was encountered")
        if "hang" in prompts:
            self.release.wait(timeout=30)
        return super().generate(key, images)


def load_faulty(settings: Settings) -> FaultInjecting:
    engine = load_emulated(settings)
    return FaultInjecting(engine.plan, engine.speedup)


def load_png_only(settings: Settings) -> FaultInjecting:
    """As a Pillow built without libwebp and JPEG would be."""
    engine = load_faulty(settings)
    engine.output_formats = frozenset({"png"})
    return engine


@contextmanager
def app_client(load: Callable[[Settings], FaultInjecting] = load_faulty, **overrides: Any) -> Iterator[TestClient]:
    app = create_app(Settings(**{**SETTINGS, **overrides}), load=load)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, interval=0.05, message="/readyz")
        yield client


def generate(client: TestClient, prompt: str) -> httpx.Response:
    return client.post("/v1/images/generations", json={"prompt": prompt, "size": "64x64"})


def test_pipeline_exception_is_an_openai_error_and_counted() -> None:
    with app_client() as client:
        response = generate(client, "raise")
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "pipeline_error" and error["type"] == "server_error"
        assert "NaN in the latents" in error["message"]
        assert sample(scrape(client), names.PIPELINE_ERRORS_TOTAL, kind="error") == 1
        assert generate(client, "a quay").status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_sticky_device_error_fails_readiness_and_liveness() -> None:
    with app_client() as client:
        assert client.get("/healthz").status_code == 200
        response = generate(client, "device")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "out_of_service"
        for probe in ("/healthz", "/readyz"):
            answer = client.get(probe)
            assert answer.status_code == 503, probe
            assert answer.json()["status"] == "broken" and "illegal memory access" in answer.json()["detail"]
        assert generate(client, "a quay").status_code == 503  # refused, not queued
        text = scrape(client)
        assert sample(text, names.PIPELINE_ERRORS_TOTAL, kind="device") == 1
        assert sample(text, names.MODEL_READY) == 0


def test_call_past_the_watchdog_fails_readiness_and_liveness() -> None:
    FaultInjecting.release.clear()
    try:
        with app_client(pipeline_timeout_seconds=0.5) as client:
            response = generate(client, "hang")
            assert response.status_code == 503
            assert "watchdog" in response.json()["error"]["message"]
            assert client.get("/healthz").status_code == 503
            assert client.get("/readyz").status_code == 503
            assert sample(scrape(client), names.PIPELINE_ERRORS_TOTAL, kind="timeout") == 1
    finally:
        FaultInjecting.release.set()


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_output_format(output_format: str) -> None:
    with app_client() as client:
        response = client.post("/v1/images/generations",
                               json={"prompt": "a quay", "size": "64x32", "output_format": output_format})
        assert response.status_code == 200, response.text
        assert response.json()["output_format"] == output_format
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
        assert image.format == output_format.upper() and image.size == (64, 32)


def test_output_format_the_server_cannot_write_is_422_naming_the_field() -> None:
    with app_client() as client:
        response = client.post("/v1/images/generations", json={"prompt": "a quay", "output_format": "gif"})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "output_format"
    with app_client(load_png_only) as client:
        response = client.post("/v1/images/generations", json={"prompt": "a quay", "output_format": "webp"})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "output_format"
        assert "writes png" in response.json()["error"]["message"]


def test_memory_is_what_can_be_measured_and_says_its_source() -> None:
    """The emulated engine has no card to read: the process's resident memory, labelled source="process"."""
    with app_client() as client:
        text = scrape(client)
    allocated = sample(text, names.MEMORY_BYTES, kind="allocated", source="process")
    peak = sample(text, names.MEMORY_BYTES, kind="peak", source="process")
    assert 10 * 2**20 < allocated <= peak  # a Python process with FastAPI loaded holds more than 10 MiB
    assert f'{names.MEMORY_BYTES}{{kind="reserved"' not in text  # a process has no allocator reserve
    assert 'source="cuda"' not in text
