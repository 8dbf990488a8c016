"""What the runtime pods' peak memory says about the operator's fit estimate (pure).

The runtime exports `imagefleet_memory_bytes{kind="peak", source=...}`. Source
`cuda` is the card's allocator (`torch.cuda.max_memory_allocated`: the tensors'
peak, which is what the fit estimate counts: weights plus activations); it is
compared with `status.memory.estimateMiB`. Source `process` is the resident
memory of the server process, on CPU and with the emulated engine: no card's
memory, so it is recorded for what it is and never compared with an estimate.

A status write happens only when the figure moves by more than `CHANGE_FRACTION`,
its source changes, or it crosses the estimate, so a steady fleet writes nothing.
The Warning Event is posted when a `cuda` peak goes above the estimate (once per
crossing, judged against the last figure written).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CUDA = "cuda"
PROCESS = "process"
# A peak within 5 % of the figure written is not written again.
CHANGE_FRACTION = 0.05
ESTIMATE_LOW = "MemoryEstimateLow"


@dataclass(frozen=True)
class Measurement:
    peak_mib: int
    source: str  # CUDA or PROCESS


@dataclass(frozen=True)
class Collision:
    """The resource's series come from more than one scrape job: none of them is taken."""

    jobs: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    # status.measuredMemory to write (None: the stored one stands).
    status: dict[str, Any] | None
    # (reason, message) of a Warning Event to post.
    warning: tuple[str, str] | None


def plan(measurement: Measurement, written: Mapping[str, Any] | None, estimate: Mapping[str, Any] | None,
         gpu_class: str, now: datetime) -> Plan:
    """What to write for a resource's new measurement, given the figure last written and the fit estimate
    (`status.memory`: estimateMiB and limitMiB; None when the model is not in the catalog)."""
    estimate_mib = estimate.get("estimateMiB") if estimate else None

    def above(peak: Any, source: Any) -> bool:
        return source == CUDA and isinstance(estimate_mib, int) and isinstance(peak, int) and peak > estimate_mib

    now_above = above(measurement.peak_mib, measurement.source)
    was_above = written is not None and above(written.get("peakMiB"), written.get("source"))
    if written is not None and written.get("source") == measurement.source and now_above == was_above:
        stored = written.get("peakMiB")
        if isinstance(stored, int) and abs(measurement.peak_mib - stored) <= CHANGE_FRACTION * stored:
            return Plan(None, None)
    status = {
        "peakMiB": measurement.peak_mib,
        "source": measurement.source,
        "observedTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if not now_above or was_above or estimate is None:
        return Plan(status, None)
    limit = int(estimate.get("limitMiB") or 0)
    message = (f"measured peak {measurement.peak_mib:,} MiB (the card's allocator, largest over the pods) is above "
               f"the estimate of {estimate_mib:,} MiB")
    if measurement.peak_mib > limit:
        message += (f" and above the {limit:,} MiB usable on {gpu_class} after the safety margin: expect "
                    "out-of-memory splits; lower spec.generation.maxWidth/maxHeight or spec.batching.maxBatchSize, "
                    "or pick a larger GPU class")
    else:
        message += (f"; it is within the {limit:,} MiB usable on {gpu_class}, but the fit check under-counts this "
                    "model at these settings")
    return Plan(status, (ESTIMATE_LOW, message))
