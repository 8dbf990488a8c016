"""Per-request multi-model traces: the CSV the pool replay reads, and the synthetic one it ships.

A trace is a CSV with a header and one row per request:

| column      | meaning                                                                  |
| ----------- | ------------------------------------------------------------------------ |
| `time`      | seconds from the start of the trace (non-decreasing)                     |
| `model`     | the checkpoint's id (any string)                                         |
| `adapters`  | LoRA adapter ids, `;`-separated; empty for none                          |
| `steps`     | denoising steps (>= 1)                                                   |
| `images`    | images in the request (>= 1)                                             |

Instead of `adapters`, a trace may carry `adapter_count` (a number of adapters whose ids it does
not know): each such adapter counts as a different one, so it is always loaded (never a hit).
Other columns are ignored, so a production trace can be replayed after renaming its columns.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

TRACES = Path(__file__).with_name("traces")
SHIPPED = TRACES / "zipf-80-lora-500.csv"
COLUMNS = ("time", "model", "adapters", "steps", "images")


@dataclass(frozen=True)
class Request:
    time: float
    model: str
    adapters: tuple[str, ...]
    steps: int
    images: int

    @property
    def resource(self) -> str:
        """The resource it names: its checkpoint, with its adapters (a LoRA is a model of its own)."""
        return "+".join((self.model, *self.adapters))


class TraceError(click.BadParameter):
    """A trace that cannot be replayed; the message names the row."""


def read_requests(path: Path) -> list[Request]:
    """The requests of a trace CSV (see the module docstring); TraceError naming the row otherwise."""
    requests: list[Request] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = set(reader.fieldnames or ())
        needed = {"time", "model", "steps", "images"}
        if not needed <= fields or not fields & {"adapters", "adapter_count"}:
            raise TraceError(f"{path}: need the columns time, model, adapters (or adapter_count), steps, images; "
                             f"got {reader.fieldnames}")
        for row in reader:
            where = f"{path}, row {reader.line_num}"
            try:
                time, steps, images = float(row["time"]), int(row["steps"]), int(row["images"])
            except (TypeError, ValueError):
                raise TraceError(f"{where}: `time` must be a number, `steps` and `images` whole numbers; "
                                 f"got {row}") from None
            if not math.isfinite(time) or time < 0:
                raise TraceError(f"{where}: `time` must be a finite number >= 0, got {time:g}")
            if requests and time < requests[-1].time:
                raise TraceError(f"{where}: `time` {time:g} is before the previous row's {requests[-1].time:g}")
            if steps < 1 or images < 1:
                raise TraceError(f"{where}: `steps` and `images` must be >= 1, got {steps} and {images}")
            if not row["model"]:
                raise TraceError(f"{where}: `model` is empty")
            requests.append(Request(time, row["model"], _adapters(row, where, len(requests)), steps, images))
    if not requests:
        raise TraceError(f"{path}: no requests")
    return requests


def _adapters(row: dict[str, str], where: str, index: int) -> tuple[str, ...]:
    if "adapters" in row and row["adapters"] is not None:
        return tuple(name for name in row["adapters"].split(";") if name)
    try:
        count = int(row["adapter_count"] or 0)
    except ValueError:
        raise TraceError(f"{where}: `adapter_count` must be a whole number, got {row['adapter_count']!r}") from None
    if count < 0:
        raise TraceError(f"{where}: `adapter_count` must be >= 0, got {count}")
    return tuple(f"unnamed-{index}-{k}" for k in range(count))  # unknown ids: never the same twice


def write_requests(path: Path, requests: Iterable[Request]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in requests:
            writer.writerow((f"{r.time:.3f}", r.model, ";".join(r.adapters), r.steps, r.images))


@dataclass(frozen=True)
class Synthetic:
    """The shipped trace's shape: Zipf popularity with a long tail over checkpoints and adapters."""

    checkpoints: int = 80
    adapters: int = 500
    lora_share: float = 0.10
    zipf_exponent: float = 1.1  # popularity of the k-th most popular: 1 / k^s
    rate: float = 0.5  # requests per second, Poisson
    duration_seconds: float = 7200.0
    steps: tuple[int, int] = (30, 40)
    images: tuple[int, int] = (1, 8)


def checkpoint_name(index: int) -> str:
    return f"ckpt-{index:02d}"


def adapter_name(index: int) -> str:
    return f"lora-{index:03d}"


def _adapter_bases(rng: random.Random, shape: Synthetic, checkpoint_weights: list[float]) -> list[int]:
    """Each adapter's checkpoint: an adapter is trained on one, so the popular checkpoints have more of them."""
    return rng.choices(range(shape.checkpoints), weights=checkpoint_weights, k=shape.adapters)


def _checkpoint_weights(shape: Synthetic) -> list[float]:
    return [1 / (k ** shape.zipf_exponent) for k in range(1, shape.checkpoints + 1)]


def adapter_checkpoints(seed: int, shape: Synthetic = Synthetic()) -> dict[str, str]:
    """Every adapter of `synthetic(seed, shape)` by name, with the checkpoint it is trained on (those no
    request draws included: a fleet serving the trace knows them all)."""
    bases = _adapter_bases(random.Random(seed), shape, _checkpoint_weights(shape))
    return {adapter_name(index): checkpoint_name(base) for index, base in enumerate(bases)}


def synthetic(seed: int, shape: Synthetic = Synthetic()) -> list[Request]:
    """A seeded trace of `shape`: Poisson arrivals, checkpoints and adapters by Zipf popularity
    (each adapter belongs to one checkpoint, drawn by the same law), steps and images uniform."""
    rng = random.Random(seed)
    checkpoint_weights = _checkpoint_weights(shape)
    adapter_weights = [1 / (k ** shape.zipf_exponent) for k in range(1, shape.adapters + 1)]
    base = _adapter_bases(rng, shape, checkpoint_weights)
    requests, time = [], 0.0
    while True:
        time += rng.expovariate(shape.rate)
        if time >= shape.duration_seconds:
            return requests
        if rng.random() < shape.lora_share:
            adapter = rng.choices(range(shape.adapters), weights=adapter_weights)[0]
            model, adapters = checkpoint_name(base[adapter]), (adapter_name(adapter),)
        else:
            model = checkpoint_name(rng.choices(range(shape.checkpoints), weights=checkpoint_weights)[0])
            adapters = ()
        requests.append(Request(round(time, 3), model, adapters, rng.randint(*shape.steps), rng.randint(*shape.images)))
