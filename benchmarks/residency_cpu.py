"""Checkpoint swaps and LoRA adapter switches of a pool pod, measured on CPU with the real diffusers
runtime and the `tiny` family (label: CPU). One `imagefleet-runtime --pool-family tiny` process serves
the built-in base, three checkpoints (random UNets saved with save_pretrained, seeds 1-3) and three
LoRA adapters (made with peft, saved in diffusers' format), all made in a temporary directory.

The pod keeps two UNets on the "GPU" (here: the CPU's working set), one in host RAM, two adapters.
Each phase sends its sequence once to settle, then once timed, one request at a time; the phases
run interleaved, round after round. It reports the median request latency and, from the pod's own
/metrics, what each load took with the evictions it made room with (imagefleet_swap_seconds):

  hit           the same checkpoint again: no move
  host swap     cycling three checkpoints through two GPU slots and one host slot: each comes from host
  disk swap     cycling four through three places: each comes from disk (read with from_pretrained)
  lora switch   alternating two resident adapters on one checkpoint: set_adapters only
  lora load     cycling three adapters through two slots: each is loaded (load_lora_weights)

On a CPU the device is the host, so a host swap moves nothing: it measures the runtime's own work.
Prints a table; asserts nothing.

    PYTHONPATH=$PWD/operator:$PWD/runtime:$PWD python benchmarks/residency_cpu.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from imagefleet import metrics as names
from tests.runtime.pool_weights import make_checkpoint, make_lora
from tests.runtime.support import RunningServer, runtime_server, sample

FLAGS = ("--pool-family", "tiny", "--gpu-budget-mib", "2", "--host-budget-mib", "1", "--adapter-slots", "2",
         "--default-steps", "4", "--max-batch-size", "1", "--max-width", "64", "--max-height", "64")


def request(server: RunningServer, root: Path, checkpoint: str | None, adapter: str | None) -> float:
    body: dict[str, Any] = {"prompt": "a lighthouse at dusk", "seed": 1}
    if checkpoint is not None:
        body["checkpoint"] = {"name": str(root / checkpoint)}
    if adapter is not None:
        body["adapters"] = [{"name": str(root / adapter)}]
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=300)
    response.raise_for_status()
    return time.monotonic() - started


def moves(server: RunningServer) -> dict[tuple[str, str], tuple[float, float]]:
    """(kind, source) -> (seconds summed, count) of the pod's swap histogram."""
    text = server.metrics_text()
    return {
        (kind, source): (
            sample(text, names.SWAP_SECONDS + "_sum", kind=kind, source=source),
            sample(text, names.SWAP_SECONDS + "_count", kind=kind, source=source),
        )
        for kind in ("checkpoint", "adapter")
        for source in ("host", "disk")
    }


def phase(server: RunningServer, root: Path, sequence: list[tuple[str | None, str | None]],
          ) -> tuple[list[float], dict[tuple[str, str], tuple[float, float]]]:
    """Run `sequence` once to settle, then once timed: its latencies and the moves' (seconds, count) meanwhile."""
    for checkpoint, adapter in sequence:
        request(server, root, checkpoint, adapter)
    before = moves(server)
    latencies = [request(server, root, c, a) for c, a in sequence]
    after = moves(server)
    return latencies, {key: (after[key][0] - before[key][0], after[key][1] - before[key][1]) for key in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="residency-cpu-"))
    for seed in (1, 2, 3):
        make_checkpoint(root / f"ck{seed}", seed)
        make_lora(root / f"lora{seed}", 10 + seed)
    phases: dict[str, list[tuple[str | None, str | None]]] = {
        "hit": [("ck1", None), ("ck1", None), ("ck1", None)],
        "host swap": [("ck1", None), ("ck2", None), ("ck3", None)],
        "disk swap": [(None, None), ("ck1", None), ("ck2", None), ("ck3", None)],
        "lora switch": [("ck1", "lora1"), ("ck1", "lora2")],
        "lora load": [("ck1", "lora1"), ("ck1", "lora2"), ("ck1", "lora3")],
    }
    latencies: dict[str, list[float]] = {name: [] for name in phases}
    totals: dict[str, dict[tuple[str, str], list[float]]] = {name: {} for name in phases}
    with runtime_server(root, *FLAGS) as server:
        # Phases interleaved, round after round: load from other work on a shared machine hits them alike.
        for _ in range(args.rounds):
            for name, sequence in phases.items():
                times, moved = phase(server, root, sequence)
                latencies[name] += times
                for key, (seconds, count) in moved.items():
                    total = totals[name].setdefault(key, [0.0, 0.0])
                    total[0] += seconds
                    total[1] += count
    print(f"CPU, tiny family, one pod (OMP_NUM_THREADS=1), {args.rounds} rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'phase':<12} {'requests':>8} {'request p50 s':>14}  loads (mean s each, evictions included)")
    for name in phases:
        detail = ", ".join(f"{kind} from {source} {seconds / count:.4f}"
                           for (kind, source), (seconds, count) in totals[name].items() if count)
        print(f"{name:<12} {len(latencies[name]):>8} {statistics.median(latencies[name]):>14.3f}  {detail or 'none'}")

if __name__ == "__main__":
    main()
