"""The runtime's speed options on CPU with the tiny model: images/s with each option off and on, side by side.

    python benchmarks/speed_options.py                 # channels_last, fuse_qkv, both
    python benchmarks/speed_options.py --compile       # and torch.compile (minutes of compilation on CPU)

Each variant is an engine the runtime itself loads (app.load_engine with the settings), called with one
batch at one size; the variants take turns round by round, so a load change on a shared machine hits
them alike. The figures are CPU/tiny: they say whether an option works and what it does to a small
CPU model, nothing about a GPU (benchmarks/gpu_runtime.py measures that).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from imagefleet_runtime.app import load_engine
from imagefleet_runtime.batcher import BatchKey, ImageSpec
from imagefleet_runtime.engines import CFG_GUIDANCE
from imagefleet_runtime.settings import Settings

VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {},
    "channels_last": {"channels_last": True},
    "fuse_qkv": {"fuse_qkv": True},
    "channels_last+fuse_qkv": {"channels_last": True, "fuse_qkv": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="images per call (default 4)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per call (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per variant (default 5)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile alone and with the others")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.compile:
        variants["compile"] = {"compile": True}
        variants["all"] = {"channels_last": True, "fuse_qkv": True, "compile": True}
    key = BatchKey(args.size, args.size, args.steps, CFG_GUIDANCE)
    specs = [ImageSpec("a lighthouse at dusk", None, seed) for seed in range(args.batch)]
    engines = {}
    for name, options in variants.items():
        engine = load_engine(Settings(model="tiny", device="cpu", **options))
        started = time.perf_counter()
        engine.generate(key, specs)  # warm-up (and, with compile, the compilation)
        print(f"{name}: first call {time.perf_counter() - started:.1f} s", flush=True)
        engines[name] = engine
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.generate(key, specs)
            seconds[name].append(time.perf_counter() - started)
    print(f"CPU/tiny (not a GPU figure), torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.size}x{args.size}, batch {args.batch}, {args.steps} steps, guidance on, {args.rounds} rounds")
    base = statistics.median(seconds["baseline"])
    print(f"{'variant':<24} {'img/s':>7} {'median s':>9} {'vs baseline':>11}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<24} {args.batch / median:>7.2f} {median:>9.3f} {base / median:>10.2f}x")


if __name__ == "__main__":
    main()
