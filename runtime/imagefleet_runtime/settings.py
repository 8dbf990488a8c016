"""Runtime settings: flags or IMAGEFLEET_* environment variables (docs/reference/environment.md lists them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagefleet.catalog import MODEL_NAMES, model_catalog
from imagefleet.cost import builtin_plan
from imagefleet.residency import checkpoint_mib

Precision = Literal["fp32", "fp16", "bf16"]
Device = Literal["cpu", "cuda", "auto"]
Engine = Literal["diffusers", "emulated"]
# The boolean settings that change how the denoiser runs (speed.py); docs/runtime.md, Speed options.
SPEED_OPTIONS = ("channels_last", "fuse_qkv", "tf32", "compile")
# WIDTHxHEIGHT[,WIDTHxHEIGHT...], e.g. 512x512,768x512.
SIZE_LIST = r"^[1-9][0-9]*x[1-9][0-9]*(,[1-9][0-9]*x[1-9][0-9]*)*$"


class Settings(BaseSettings):
    """Everything the server can be told; each field is a flag and an environment variable."""

    model_config = SettingsConfigDict(env_prefix="IMAGEFLEET_", extra="forbid", frozen=True)

    model: str = Field("tiny", description="catalog name (tiny, sd15-arch, sd15, sdxl, ...) or Hugging Face repo id")
    model_revision: str | None = Field(
        None, description="Hugging Face revision (commit sha, tag or branch) of a repo id loaded from the Hub"
    )
    model_path: Path | None = Field(
        None, description="local directory with the weights (a diffusers folder or a hub cache), e.g. a mounted PVC"
    )
    offline: bool = Field(False, description="never contact the Hugging Face Hub")
    precision: Precision = Field("fp32", description="weights and compute dtype")
    device: Device = Field("auto", description="where the pipeline runs; auto picks cuda when available")
    max_batch_size: int = Field(4, ge=1, le=256, description="most images in one pipeline call")
    queue_size: int = Field(64, ge=1, description="most images waiting; a request that would pass it gets 429")
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body; a larger one gets 413 before it is read"
    )
    pipeline_timeout_seconds: float = Field(
        600.0, gt=0, description="watchdog: a pipeline call running longer takes the pod out of service"
    )
    default_steps: int = Field(25, ge=1, description="denoising steps when a request gives none")
    max_steps: int = Field(100, ge=1, description="most denoising steps a request may ask for")
    default_guidance_scale: float = Field(7.0, ge=0, description="classifier-free guidance when a request gives none")
    default_width: int | None = Field(
        None, ge=8, description="image width when a request gives no size; unset: the model's native width"
    )
    default_height: int | None = Field(
        None, ge=8, description="image height when a request gives no size; unset: the model's native height"
    )
    max_width: int | None = Field(
        None, ge=8,
        description="widest image a request may ask for (the warm-up runs it); unset: the model's native width",
    )
    max_height: int | None = Field(
        None, ge=8,
        description="tallest image a request may ask for (the warm-up runs it); unset: the model's native height",
    )
    engine: Engine = Field(
        "diffusers", description="diffusers runs the model; emulated takes a real card's time and never loads torch"
    )
    gpu_class: str | None = Field(
        None, description="GPU class (catalog name, e.g. h100-80gb) the emulated engine stands in for; a metric label"
    )
    emulation_speedup: float = Field(
        1.0, gt=0, description="the emulated engine divides every duration by this (time-compressed tests)"
    )
    channels_last: bool = Field(
        False, description="hold the denoiser and the VAE in channels-last (NHWC) memory format"
    )
    fuse_qkv: bool = Field(
        False,
        description="fuse each attention's query, key and value projections into one matmul "
        "(diffusers' fuse_qkv_projections, denoiser and VAE); refused for a denoiser without it",
    )
    tf32: bool = Field(
        False, description="run fp32 matmuls and convolutions as TF32 on tensor cores; needs precision fp32 on cuda"
    )
    compile: bool = Field(
        False,
        description="torch.compile the denoiser; requests are then limited to compile_sizes, all compiled "
        "by the warm-up before Ready",
    )
    compile_sizes: str | None = Field(
        None, pattern=SIZE_LIST,
        description="with compile: the image sizes (WIDTHxHEIGHT,...) a request may ask for, besides the default "
        "size, which is always one",
    )
    pool_family: str | None = Field(
        None,
        description="pool mode: serve many checkpoints and LoRA adapters of this catalog family (e.g. sdxl, tiny), "
        "named per request; model is the base checkpoint (default: the family)",
    )
    gpu_budget_mib: float | None = Field(
        None, gt=0, description="pool mode: MiB of checkpoints (denoisers) kept on the GPU, least recently used out"
    )
    host_budget_mib: float | None = Field(
        None, ge=0, description="pool mode: MiB of checkpoints kept in host RAM off the GPU; the rest is read from disk"
    )
    adapter_slots: int = Field(
        8, ge=1, le=256, description="pool mode: LoRA adapters kept loaded, least recently used out"
    )
    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on (generations, /v1/load, probes)")
    metrics_port: int = Field(
        9090, ge=1, le=65535, description="port of GET /metrics alone, apart from port (so that a network policy "
        "can let Prometheus in there and nowhere else)"
    )

    @model_validator(mode="before")
    @classmethod
    def _pool_base_is_the_family(cls, data: Any) -> Any:
        """In pool mode the base checkpoint defaults to the family's catalog model."""
        if isinstance(data, dict) and data.get("pool_family") and not data.get("model"):
            return {**data, "model": data["pool_family"]}
        return data

    @property
    def pool(self) -> bool:
        return self.pool_family is not None

    @model_validator(mode="after")
    def _pool_is_complete(self) -> Self:
        """Pool mode needs a catalog family and both budgets; the pool settings mean nothing without it."""
        if self.pool_family is None:
            if self.gpu_budget_mib is not None or self.host_budget_mib is not None:
                raise ValueError("gpu_budget_mib and host_budget_mib need pool_family (--pool-family)")
            return self
        if self.pool_family not in MODEL_NAMES:
            raise ValueError(f"pool_family {self.pool_family!r} is not a catalog model ({', '.join(MODEL_NAMES)})")
        if self.gpu_budget_mib is None or self.host_budget_mib is None:
            raise ValueError("pool mode needs --gpu-budget-mib and --host-budget-mib (IMAGEFLEET_GPU_BUDGET_MIB, ...)")
        per_denoiser = [name for name in ("channels_last", "fuse_qkv", "compile") if getattr(self, name)]
        if per_denoiser:
            raise ValueError(
                f"{', '.join(per_denoiser)}: not supported in pool mode (they change one denoiser, and a pool "
                "swaps denoisers); drop them"
            )
        need = checkpoint_mib(model_catalog()[self.pool_family], self.precision)
        if need > self.gpu_budget_mib:
            raise ValueError(
                f"a {self.pool_family} checkpoint needs {need:,.0f} MiB at {self.precision}, above gpu_budget_mib "
                f"{self.gpu_budget_mib:,.0f}; raise the budget or lower the precision"
            )
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Self:
        if self.metrics_port == self.port:
            raise ValueError(f"metrics_port and port are both {self.port}: /metrics has a port of its own")
        return self

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Self:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) is above max_steps ({self.max_steps})")
        if self.default_width is not None and self.max_width is not None and self.default_width > self.max_width:
            raise ValueError(f"default_width ({self.default_width}) is above max_width ({self.max_width})")
        if self.default_height is not None and self.max_height is not None and self.default_height > self.max_height:
            raise ValueError(f"default_height ({self.default_height}) is above max_height ({self.max_height})")
        return self

    @property
    def compile_buckets(self) -> tuple[tuple[int, int], ...]:
        """compile_sizes as (width, height) pairs, in the order given (the default size is added by the app)."""
        if self.compile_sizes is None:
            return ()
        pairs = (size.split("x") for size in self.compile_sizes.split(","))
        return tuple(dict.fromkeys((int(width), int(height)) for width, height in pairs))

    @model_validator(mode="after")
    def _speed_options_can_work(self) -> Self:
        """tf32 is a mode of fp32 on CUDA, compile_sizes a setting of compile: any other use is refused."""
        if self.tf32 and self.precision != "fp32":
            raise ValueError(
                f"tf32 needs precision fp32 (it is a mode of fp32 matmuls on CUDA), not {self.precision}: "
                "drop --tf32 (IMAGEFLEET_TF32) or set precision fp32"
            )
        if self.tf32 and self.engine == "diffusers" and self.device == "cpu":
            raise ValueError("tf32 needs device cuda (TF32 runs on NVIDIA tensor cores): drop --tf32 or use cuda")
        if self.compile_sizes is not None and not self.compile:
            raise ValueError("compile_sizes needs compile: set --compile (IMAGEFLEET_COMPILE=true) or drop them")
        for width, height in self.compile_buckets:
            if (self.max_width is not None and width > self.max_width) or (
                self.max_height is not None and height > self.max_height
            ):
                raise ValueError(
                    f"compile_sizes: {width}x{height} is above max_width x max_height {self.max_width}x{self.max_height}"
                )
        return self

    @model_validator(mode="after")
    def _emulation_has_figures(self) -> Self:
        """engine=emulated needs a GPU class with figures for the model, a precision it runs, and room for an image."""
        if self.engine != "emulated":
            return self
        if self.gpu_class is None:
            raise ValueError("engine emulated needs gpu_class (--gpu-class or IMAGEFLEET_GPU_CLASS), e.g. h100-80gb")
        plan = builtin_plan(model=self.model, gpu_class=self.gpu_class, precision=self.precision)
        width, height = self.max_width or plan.native_size, self.max_height or plan.native_size
        if not plan.fits(1, width, height):
            raise ValueError(
                f"one {width}x{height} image of {self.model} at {self.precision} does not fit "
                f"the memory of {self.gpu_class}; lower max_width/max_height or the precision, or pick a larger class"
            )
        return self
