"""Giving freed memory back to the operating system.

CPython keeps what it frees: small objects in its own 1 MiB arenas, returned only once wholly
empty, and the rest in glibc's heap, returned only from its top. Converging thousands of
resources parses and drops gigabytes of watch events, and the few objects that live on (index
entries, write answers) pin the pages around them. At 2,000 resources the operator held 550 MiB
of arenas of which 171 MiB were live objects (docs/scaling.md). So the operator image runs
CPython on glibc's allocator (`ALLOCATOR_ENV`, set in docker/Dockerfile.operator) and the
operator returns the free pages of glibc's heap every half minute (`malloc_trim(0)`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

# CPython on glibc's malloc (so that trimming reaches small objects too), with at most two
# arenas for the client's threads (each thread would otherwise get its own, each fragmented).
ALLOCATOR_ENV = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "2"}
TRIM_INTERVAL_SECONDS = 30.0


def trimmer() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)` (returns 1 when it gave memory back); None without glibc (e.g. musl)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def start_trimming(interval_seconds: float = TRIM_INTERVAL_SECONDS) -> bool:
    """Trim glibc's heap every `interval_seconds` in a daemon thread; False where there is no glibc."""
    trim = trimmer()
    if trim is None:
        return False

    def forever() -> None:
        while True:
            time.sleep(interval_seconds)
            trim()

    threading.Thread(target=forever, name="imagefleet malloc_trim", daemon=True).start()
    return True
