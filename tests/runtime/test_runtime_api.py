"""The HTTP API of a real runtime process: OpenAI compatibility, seeds, validation."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy
import openai
import pytest
from PIL import Image

from imagefleet import metrics as names
from tests.helpers import wait_until

from .support import RunningServer

PROMPT = "a lighthouse at dusk"


def openai_client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def generate(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=60)


def png_bytes(response: httpx.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def test_openai_client_gets_png_of_requested_size(runtime: RunningServer) -> None:
    result = openai_client(runtime).images.generate(
        model="tiny", prompt=PROMPT, n=2, size="96x64", response_format="b64_json",  # type: ignore[arg-type]
        extra_body={"seed": 3},
    )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG"
        assert image.size == (96, 64)
        image.load()  # decodes the pixels, not only the header


def test_openai_client_sees_validation_error(runtime: RunningServer) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="steps"):
        openai_client(runtime).images.generate(prompt=PROMPT, extra_body={"steps": 10_000})


def test_models_health_and_readiness(runtime: RunningServer) -> None:
    models = httpx.get(f"{runtime.base_url}/v1/models").json()
    assert [model["id"] for model in models["data"]] == ["tiny"]
    assert (models["data"][0]["engine"], models["data"][0]["emulated"]) == ("diffusers", False)
    assert runtime.metric(names.ENGINE_INFO, engine="diffusers", gpu_class="", model="tiny") == 1
    assert httpx.get(f"{runtime.base_url}/healthz").status_code == 200
    assert httpx.get(f"{runtime.base_url}/readyz").json()["status"] == "ready"
    assert runtime.metric(names.MODEL_READY) == 1


def test_same_seed_same_bytes_alone(runtime: RunningServer) -> None:
    first = png_bytes(generate(runtime, prompt=PROMPT, seed=11))
    second = png_bytes(generate(runtime, prompt=PROMPT, seed=11))
    other = png_bytes(generate(runtime, prompt=PROMPT, seed=12))
    assert first == second
    assert first != other


def test_same_seed_inside_a_batch(runtime: RunningServer) -> None:
    """In one batch: same seed -> identical bytes, other seeds differ. Against the lone run the
    image is the same up to float rounding: CPU kernels (oneDNN, MKL) pick their blocking by batch
    size, so a handful of pixels may move by one level out of 255 (see README)."""
    alone = {seed: png_bytes(generate(runtime, prompt=PROMPT, seed=seed))[0] for seed in (21, 22)}
    calls_before = runtime.metric(names.BATCH_SIZE + "_count")
    requests_before = runtime.metric(names.BATCH_SIZE + "_sum")
    seeds = [21, 22, 21, 22]
    with ThreadPoolExecutor(2 + len(seeds)) as pool:
        # Two long requests with other steps (so each runs alone): once one waits, the other is running,
        # and the four queue up behind both.
        blockers = [pool.submit(generate, runtime, prompt=PROMPT, steps=steps) for steps in (100, 99)]
        wait_until(lambda: runtime.metric(names.QUEUE_DEPTH) == 1, timeout=60, interval=0.02,
                   message="one blocker running, one waiting")
        futures = [pool.submit(generate, runtime, prompt=PROMPT, seed=seed) for seed in seeds]
        batched = [png_bytes(future.result())[0] for future in futures]
        assert [blocker.result().status_code for blocker in blockers] == [200, 200]
    calls = runtime.metric(names.BATCH_SIZE + "_count") - calls_before
    requests = runtime.metric(names.BATCH_SIZE + "_sum") - requests_before
    assert (calls, requests) == (3, 2 + len(seeds)), "the four queued requests did not share one pipeline call"
    assert batched[0] == batched[2]
    assert batched[1] == batched[3]
    assert batched[0] != batched[1]
    for image, seed in zip(batched[:2], (21, 22), strict=True):
        assert_same_image(image, alone[seed])
    # n=2 in one request: the images use seed and seed + 1.
    pair = png_bytes(generate(runtime, prompt=PROMPT, seed=21, n=2))
    assert_same_image(pair[0], alone[21])
    assert_same_image(pair[1], alone[22])


def assert_same_image(png: bytes, reference: bytes) -> None:
    """Equal but for float rounding: no pixel off by more than 1/255, under 1% of them off at all."""
    ours = numpy.asarray(Image.open(io.BytesIO(png)), dtype=numpy.int16)
    theirs = numpy.asarray(Image.open(io.BytesIO(reference)), dtype=numpy.int16)
    assert ours.shape == theirs.shape
    difference = numpy.abs(ours - theirs)
    assert difference.max() <= 1, f"pixels differ by up to {difference.max()}"
    assert (difference > 0).mean() < 0.01, f"{(difference > 0).mean():.1%} of the pixels differ"


def test_negative_prompt_changes_image_and_mixes_in_batch(runtime: RunningServer) -> None:
    plain = png_bytes(generate(runtime, prompt=PROMPT, seed=5))[0]
    negative = png_bytes(generate(runtime, prompt=PROMPT, seed=5, negative_prompt="fog"))[0]
    assert plain != negative
    with ThreadPoolExecutor(2) as pool:
        mixed = list(pool.map(
            lambda body: png_bytes(generate(runtime, **body))[0],
            [{"prompt": PROMPT, "seed": 5}, {"prompt": PROMPT, "seed": 5, "negative_prompt": "fog"}],
        ))
    assert_same_image(mixed[0], plain)
    assert_same_image(mixed[1], negative)


INVALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("prompt", {}),
    ("prompt", {"prompt": ""}),
    ("prompt", {"prompt": "   "}),
    ("prompt", {"prompt": "x" * 4001}),
    ("n", {"prompt": PROMPT, "n": 0}),
    ("n", {"prompt": PROMPT, "n": 11}),
    ("n", {"prompt": PROMPT, "n": "2"}),
    ("size", {"prompt": PROMPT, "size": "large"}),
    ("size", {"prompt": PROMPT, "size": "4096x4096"}),
    ("size", {"prompt": PROMPT, "size": "60x64"}),
    ("steps", {"prompt": PROMPT, "steps": 0}),
    ("steps", {"prompt": PROMPT, "steps": 1000}),
    ("guidance_scale", {"prompt": PROMPT, "guidance_scale": -1}),
    ("seed", {"prompt": PROMPT, "seed": -1}),
    ("response_format", {"prompt": PROMPT, "response_format": "url"}),
    ("model", {"prompt": PROMPT, "model": "sdxl"}),
    ("stepz", {"prompt": PROMPT, "stepz": 3}),
]


@pytest.mark.parametrize(("field", "body"), INVALID_BODIES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID_BODIES)])
def test_invalid_request_gets_422_naming_the_field(runtime: RunningServer, field: str, body: dict[str, Any]) -> None:
    before = runtime.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID)
    response = generate(runtime, **body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}:")
    assert runtime.metric(names.REQUESTS_REJECTED_TOTAL, reason=names.REJECT_INVALID) == before + 1


def test_body_that_is_not_json_gets_422(runtime: RunningServer) -> None:
    response = httpx.post(
        f"{runtime.base_url}/v1/images/generations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "body" and "json" in error["message"].lower()
