"""Settings from flags and IMAGEFLEET_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet_runtime.__main__ import EXIT_BAD_SETTINGS, load_settings


def test_defaults() -> None:
    settings = load_settings([])
    assert (settings.model, settings.precision, settings.port, settings.offline) == ("tiny", "fp32", 8000, False)
    assert settings.default_width is None  # the model's native size
    assert (settings.max_width, settings.max_height) == (None, None)  # the model's native size too
    assert (settings.engine, settings.gpu_class, settings.emulation_speedup) == ("diffusers", None, 1.0)


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFLEET_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("IMAGEFLEET_OFFLINE", "true")
    monkeypatch.setenv("IMAGEFLEET_MODEL_PATH", "/models/sdxl")
    monkeypatch.setenv("IMAGEFLEET_PORT", "9000")
    settings = load_settings(["--port", "9100", "--precision", "bf16"])
    assert settings.max_batch_size == 8 and settings.offline is True
    assert settings.model_path == Path("/models/sdxl")
    assert settings.port == 9100  # the flag wins over the variable
    assert settings.precision == "bf16"
    assert load_settings(["--no-offline"]).offline is False


def test_a_removed_variable_from_an_older_operator_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pods made by an operator from before continuous batching still set IMAGEFLEET_MAX_BATCH_DELAY_MS."""
    monkeypatch.setenv("IMAGEFLEET_MAX_BATCH_DELAY_MS", "20")
    monkeypatch.setenv("IMAGEFLEET_MAX_BATCH_SIZE", "8")
    settings = load_settings([])
    assert settings.max_batch_size == 8
    assert "max_batch_delay_ms" not in settings.model_dump()



@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--max-batch-size", "0"], "max_batch_size"),
        (["--default-steps", "50", "--max-steps", "20"], "default_steps"),
        (["--default-width", "2048", "--max-width", "1024"], "default_width"),
        (["--port", "http"], "port"),
    ],
)
def test_invalid_settings_exit_2_naming_the_field(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_settings(argv)
    assert stopped.value.code == EXIT_BAD_SETTINGS
    assert field in capsys.readouterr().err


def test_choices_are_checked_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--precision", "int8"])
    assert "fp16" in capsys.readouterr().err


def test_cuda_without_a_gpu_names_the_torch_cuda_and_the_driver() -> None:
    """On a GPU node with too old a driver torch sees no GPU: the message says what to check."""
    import torch

    from imagefleet_runtime.errors import ModelLoadError
    from imagefleet_runtime.models.loader import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ModelLoadError, match=f"built for CUDA {torch.version.cuda}.*driver >= 580"):
        resolve_device("cuda")
