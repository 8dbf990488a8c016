"""The runtime on an NVIDIA GPU, in one command: the SD 1.5-sized UNet with random weights, then the server.

    python benchmarks/gpu_runtime.py --output gpu.json            # on a machine with an NVIDIA GPU
    python benchmarks/gpu_runtime.py --self-test --output t.json  # CPU, tiny sizes, seconds: what CI runs

1. The denoiser alone: SD 1.5's UNet (860M parameters, random weights) at 512x512 (64x64 latents),
   25 steps with classifier-free guidance (each step runs the UNet on 2 x batch), at fp32, fp16 and
   bf16, batch 1, 4 and 8, with each speed option on alone and all on: channels_last, torch.compile,
   fused QKV projections (diffusers' fuse_qkv_projections), TF32 (fp32 only), each applied by the
   runtime's own code (imagefleet_runtime.speed, as its --channels-last ... flags do). For each: images/s,
   the p95 of one 25-step generation, peak GPU memory, and the fraction of the card's dense
   fp16/bf16 (or TF32/fp32) peak that the UNet's FLOPs (counted with torch's FlopCounterMode)
   reach, from the card's datasheet figure when the card is in DENSE_PEAK_TFLOPS.
2. The same model through the server under load: `imagefleet-runtime --model sd15-arch` at each
   precision, max batch 8, 16 closed-loop clients; images/s and p95 beside the raw pipeline called
   directly at the server's mean batch size: the server's overhead on the GPU.

Prints a table and writes JSON. Figures are only ever measured: an option that cannot run here
(TF32 on CPU, torch.compile in the self-test) is recorded as skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from torch.utils.flop_counter import FlopCounterMode

from imagefleet_runtime.models.builtin import build_sd15_arch, build_tiny
from imagefleet_runtime.speed import apply_to_denoiser, set_tf32, tf32_applies

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_throughput import batch_totals, drive, server  # noqa: E402 - the sibling benchmark's helpers

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPTIONS = ("channels_last", "compile", "fused_qkv", "tf32")
TEXT_TOKENS = 77
# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, TFLOP/s: fp16/bf16, TF32, plain fp32.
# Matched against torch.cuda.get_device_name(), most specific first.
DENSE_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"fp16": 756.0, "bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H200", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100", {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"fp16": 362.1, "bf16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)


@dataclass
class Point:
    precision: str
    batch: int
    options: list[str]
    images_per_second: float | None = None
    p95_seconds: float | None = None
    median_seconds: float | None = None
    peak_memory_mib: float | None = None
    unet_tflops_per_image: float | None = None
    fraction_of_dense_peak: float | None = None
    skipped: str | None = None


@dataclass
class Report:
    device: str
    gpu: bool
    torch: str
    self_test: bool
    size: int
    steps: int
    dense_peak_tflops: dict[str, float] | None
    memory_note: str
    denoiser: list[Point] = field(default_factory=list)
    server: list[dict[str, Any]] = field(default_factory=list)


def dense_peak(device_name: str) -> dict[str, float] | None:
    return next((peaks for key, peaks in DENSE_PEAK_TFLOPS if key in device_name), None)


def skip_reason(option: str, precision: str, device: torch.device, self_test: bool) -> str | None:
    if option == "tf32" and not tf32_applies(device.type, precision):
        return "TF32 applies to fp32 matmuls and convolutions on CUDA only"
    if option == "compile" and self_test:
        return "torch.compile is left out of the CPU self-test (minutes of compilation)"
    return None


def prepare_unet(unet: torch.nn.Module, options: list[str], device: torch.device, dtype: torch.dtype) -> Any:
    """The runtime's own code (imagefleet_runtime.speed) applies the options, as a server with them set does."""
    set_tf32("tf32" in options)
    return apply_to_denoiser(unet.to(device=device, dtype=dtype).eval(), channels_last="channels_last" in options,
                             fuse_qkv="fused_qkv" in options, compile="compile" in options)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_denoiser(build: Any, precision: str, batch: int, options: list[str], *, device: torch.device,
                     latent: int, steps: int, repeats: int, peaks: dict[str, float] | None) -> Point:
    point = Point(precision, batch, options)
    dtype = DTYPES[precision]
    unet = prepare_unet(build().unet, options, device, dtype)
    torch.manual_seed(0)
    hidden = torch.randn(2 * batch, TEXT_TOKENS, unet.config.cross_attention_dim, device=device, dtype=dtype)
    sample = torch.randn(2 * batch, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    if "channels_last" in options:
        sample = sample.to(memory_format=torch.channels_last)
    timestep = torch.tensor(500, device=device)

    def generation() -> float:
        started = time.perf_counter()
        latents = sample
        for _ in range(steps):
            noise = unet(latents, timestep, encoder_hidden_states=hidden).sample
            latents = latents - 0.01 * noise  # a step's worth of work besides the UNet, as a scheduler does
        synchronize(device)
        return time.perf_counter() - started

    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            unet(sample, timestep, encoder_hidden_states=hidden)
        generation()  # warm-up: kernels, allocator, the compiled graph
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = [generation() for _ in range(repeats)]
    point.median_seconds = statistics.median(seconds)
    point.p95_seconds = statistics.quantiles(seconds, n=20, method="inclusive")[18] if len(seconds) > 1 else seconds[0]
    point.images_per_second = batch / point.median_seconds
    point.unet_tflops_per_image = counter.get_total_flops() * steps / batch / 1e12
    if device.type == "cuda":
        point.peak_memory_mib = torch.cuda.max_memory_allocated(device) / 2**20
    if peaks is not None:
        kind = "tf32" if precision == "fp32" and "tf32" in options else precision
        if kind in peaks:
            achieved = point.unet_tflops_per_image * point.images_per_second
            point.fraction_of_dense_peak = achieved / peaks[kind]
    del unet
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return point


def raw_pipeline_images_per_second(build: Any, precision: str, batch: int, *, device: torch.device, size: int,
                                   steps: int, repeats: int) -> float:
    pipeline = build().to(device=device, dtype=DTYPES[precision])
    pipeline.set_progress_bar_config(disable=True)

    def call() -> None:
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]
        with torch.inference_mode():
            pipeline(prompt=["a lighthouse at dusk"] * batch, num_inference_steps=steps, guidance_scale=7.0,
                     width=size, height=size, generator=generators)
        synchronize(device)

    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    rate = repeats * batch / (time.perf_counter() - started)
    del pipeline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def measure_server(model: str, build: Any, precision: str, *, device: torch.device, size: int, steps: int,
                   requests: int, concurrency: int, repeats: int) -> dict[str, Any]:
    flags = ("--model", model, "--device", device.type, "--precision", precision, "--default-steps", str(steps),
             "--max-width", str(max(size, 64)), "--max-height", str(max(size, 64)))
    with server(8, torch.get_num_threads(), *flags) as url:
        before = batch_totals(url)
        point = asyncio.run(drive(url, size, steps, concurrency, requests))
        after = batch_totals(url)
    mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
    raw = raw_pipeline_images_per_second(build, precision, max(1, round(mean_batch)), device=device, size=size,
                                         steps=steps, repeats=repeats)
    served = point.images_per_minute / 60
    return {"precision": precision, "concurrency": concurrency, "requests": requests,
            "images_per_second": served, "p95_seconds": point.p95, "mean_batch": mean_batch,
            "raw_pipeline_images_per_second": raw, "server_over_raw": served / raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true", help="CPU, the tiny model, 2 steps: seconds, for CI")
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--repeats", type=int, default=None, help="timed generations per point (default 10; 3)")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()  # a line per dtype cast of random weights says nothing here

    if args.self_test:
        device, build, model, size, steps = torch.device("cpu"), build_tiny, "tiny", 64, 2
        precisions, batches, repeats = ("fp32", "bf16"), (1, 2), args.repeats or 3
        server_requests, concurrency = 8, 4
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU: run on a machine with an NVIDIA GPU, or pass --self-test")
        device, build, model, size, steps = torch.device("cuda"), build_sd15_arch, "sd15-arch", 512, 25
        precisions, batches, repeats = ("fp32", "fp16", "bf16"), (1, 4, 8), args.repeats or 10
        server_requests, concurrency = 64, 16
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    peaks = dense_peak(name) if device.type == "cuda" else None
    latent = size // build().vae_scale_factor
    report = Report(
        device=name, gpu=device.type == "cuda", torch=torch.__version__, self_test=args.self_test, size=size,
        steps=steps, dense_peak_tflops=peaks, memory_note="peak_memory_mib: torch.cuda.max_memory_allocated",
    )
    variants = [[], *([option] for option in OPTIONS), list(OPTIONS)]
    print(f"{name}, torch {torch.__version__}, {size}x{size}, {steps} steps, CFG on")
    print(f"{'precision':>9} {'batch':>5} {'options':<40} {'img/s':>7} {'p95 s':>7} {'peak MiB':>8} {'of peak':>7}")
    for precision in precisions:
        for batch in batches:
            for options in variants:
                reasons = [r for option in options if (r := skip_reason(option, precision, device, args.self_test))]
                if options == list(OPTIONS):
                    options = [o for o in OPTIONS if skip_reason(o, precision, device, args.self_test) is None]
                    reasons = []
                if reasons:
                    report.denoiser.append(Point(precision, batch, options, skipped=reasons[0]))
                    continue
                point = measure_denoiser(build, precision, batch, options, device=device, latent=latent,
                                         steps=steps, repeats=repeats, peaks=peaks)
                report.denoiser.append(point)
                fraction = "-" if point.fraction_of_dense_peak is None else f"{point.fraction_of_dense_peak:.0%}"
                memory = "-" if point.peak_memory_mib is None else f"{point.peak_memory_mib:.0f}"
                print(f"{precision:>9} {batch:>5} {'+'.join(options) or 'baseline':<40} "
                      f"{point.images_per_second:>7.2f} {point.p95_seconds:>7.3f} {memory:>8} {fraction:>7}", flush=True)
    for precision in precisions:
        result = measure_server(model, build, precision, device=device, size=size, steps=steps,
                                requests=server_requests, concurrency=concurrency, repeats=max(2, repeats // 2))
        report.server.append(result)
        print(f"server {precision}: {result['images_per_second']:.2f} img/s, p95 {result['p95_seconds']:.2f} s, "
              f"mean batch {result['mean_batch']:.1f}, raw {result['raw_pipeline_images_per_second']:.2f} img/s, "
              f"server/raw {result['server_over_raw']:.0%}", flush=True)
    if device.type != "cuda":
        report.memory_note = (f"no GPU memory to measure on CPU: peak_memory_mib is null (this process's peak "
                              f"RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    args.output.write_text(json.dumps(asdict(report), indent=2, allow_nan=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
