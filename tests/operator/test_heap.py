"""The operator gives freed memory back: glibc's allocator plus a periodic malloc_trim (imagefleet.heap)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from imagefleet import heap
from tests.chart.helm import ROOT

# Fill the heap with small objects as parsed watch events do, keep one in 64 alive (what the
# indexes keep), free the rest, then trim.
FRAGMENT_AND_TRIM = """
from imagefleet import heap

def rss_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])

events = [{"metadata": {"name": str(i) * 8, "labels": {"a": "b" * 40}}} for i in range(400_000)]
kept = events[::64]
del events
freed = rss_kib()
assert heap.trimmer()() == 1
print(freed, rss_kib(), len(kept))
"""


def _run(env: dict[str, str]) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", FRAGMENT_AND_TRIM], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


def test_with_the_images_allocator_a_trim_gives_most_freed_memory_back() -> None:
    before, after = _run(heap.ALLOCATOR_ENV)
    assert after < 0.5 * before, (before, after)
    # With CPython's own allocator the same trim can only reach glibc's part: the arenas stay.
    pymalloc_before, pymalloc_after = _run({"PYTHONMALLOC": "pymalloc"})
    assert pymalloc_after > 0.8 * pymalloc_before, (pymalloc_before, pymalloc_after)


def test_the_operator_image_sets_the_allocator_env() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile.operator").read_text()
    for name, value in heap.ALLOCATOR_ENV.items():
        assert re.search(rf"^\s+{name}={value}\b", dockerfile, re.MULTILINE), name
