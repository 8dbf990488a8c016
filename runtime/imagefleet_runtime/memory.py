"""What the runtime can measure of its memory: the CUDA allocator's figures on a GPU, else the process's.

On CPU and with the emulated engine there is no accelerator memory to read: the reading is the
process's resident memory (current and peak), labelled source="process" so that no one mistakes
it for a card's.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class MemoryReading:
    """Bytes; None where the source cannot tell (a process has no allocator reserve)."""

    source: str  # "cuda" or "process"
    allocated: int | None
    reserved: int | None
    peak: int | None


def process_memory() -> MemoryReading:
    """Resident memory of this process now, and its peak (Linux: ru_maxrss is in KiB)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    resident = resident_pages * os.sysconf("SC_PAGE_SIZE")
    # The kernel updates its high-water mark lazily: it can lag the current figure.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB, resident)
    return MemoryReading("process", resident, None, peak)
