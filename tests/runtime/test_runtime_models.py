"""Model building and loading: the built-in pipelines and the real diffusers loading path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from imagefleet_runtime.batcher import BatchKey, ImageSpec
from imagefleet_runtime.engine import PipelineEngine
from imagefleet_runtime.errors import ContentFiltered, DeviceFailure
from imagefleet_runtime.models import builtin
from imagefleet_runtime.models.loader import ModelLoadError, load_pipeline, resolve_device
from imagefleet_runtime.settings import Settings

KEY = BatchKey(64, 64, 2, 7.0)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The test machine's cores are shared; oversubscribed OpenMP threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sd15_arch_has_stable_diffusion_15_sizes() -> None:
    """Built on the meta device: shapes only, so this costs no memory."""
    with torch.device("meta"):
        pipeline = builtin.build_sd15_arch()
    counts = {name: sum(p.numel() for p in getattr(pipeline, name).parameters())
              for name in ("unet", "vae", "text_encoder")}
    # The published SD 1.5 checkpoint's parameter counts.
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert pipeline.vae_scale_factor == 8


def test_tiny_tokenizer_is_byte_level_clip() -> None:
    tokenizer = builtin.tiny_tokenizer()
    ids = tokenizer("Café 🚀").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]  # every byte has a token
    assert len(tokenizer("x " * 500, truncation=True).input_ids) == builtin.MAX_TOKENS


def test_tiny_engine_native_size_and_reproducible_images() -> None:
    pipeline, device = load_pipeline(Settings(model="tiny", device="cpu"))
    engine = PipelineEngine(pipeline, device)
    assert (engine.native_size, engine.size_multiple) == (64, 8)
    first = engine.generate(KEY, [ImageSpec("a red square", None, 1)])
    assert first == engine.generate(KEY, [ImageSpec("a red square", None, 1)])
    assert first != engine.generate(KEY, [ImageSpec("a red square", None, 2)])
    assert engine.encode(first[0], "png").startswith(b"\x89PNG")


def test_loads_a_local_diffusers_folder_offline(tmp_path: Path) -> None:
    """The path real models take (AutoPipelineForText2Image picks the class from model_index.json)."""
    builtin.build_tiny().save_pretrained(tmp_path)
    local, _ = load_pipeline(Settings(model="my-model", model_path=tmp_path, offline=True, device="cpu"))
    assert isinstance(local, StableDiffusionPipeline)
    tiny, _ = load_pipeline(Settings(model="tiny", device="cpu"))
    spec = [ImageSpec("a red square", None, 7)]
    cpu = torch.device("cpu")
    assert PipelineEngine(local, cpu).generate(KEY, spec) == PipelineEngine(tiny, cpu).generate(KEY, spec)


def test_unknown_model_offline_fails_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="catalog: flux1-dev, flux1-schnell, sd15, sd35-large") as error:
        load_pipeline(Settings(model="no-such/model", offline=True, model_path=tmp_path, device="cpu"))
    assert "offline" in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_sticky_cuda_error_is_a_device_failure_and_other_errors_pass_through() -> None:
    """The classification the batcher relies on, with the pipeline raising what CUDA would."""
    pipeline, device = load_pipeline(Settings(model="tiny", device="cpu"))
    engine = PipelineEngine(pipeline, device)
    spec = [ImageSpec("a red square", None, 1)]

    def raising(message: str) -> Callable[..., object]:
        def call(**_: object) -> object:
            raise RuntimeError(message)
        return call

    engine.pipeline = raising("CUDA error: an illegal memory access was encountered")
    with pytest.raises(DeviceFailure, match="illegal memory access"):
        engine.generate(KEY, spec)
    engine.pipeline = raising("Expected all tensors to be on the same device")
    with pytest.raises(RuntimeError, match="same device") as error:
        engine.generate(KEY, spec)
    assert not isinstance(error.value, DeviceFailure)


def test_flagged_image_becomes_a_content_policy_error_not_a_black_image() -> None:
    """What a pipeline with a safety checker returns: the flagged image blacked out, and the flags."""
    pipeline, device = load_pipeline(Settings(model="tiny", device="cpu"))
    engine = PipelineEngine(pipeline, device)
    black = Image.new("RGB", (64, 64))

    def checked(**_: object) -> object:
        return SimpleNamespace(images=[black, black], nsfw_content_detected=[False, True])

    engine.pipeline = checked
    kept, flagged = engine.generate(KEY, [ImageSpec("a", None, 1), ImageSpec("b", None, 2)])
    assert kept is black
    assert isinstance(flagged, ContentFiltered)
    assert (flagged.status, flagged.code, flagged.param) == (400, "content_policy_violation", "prompt")
