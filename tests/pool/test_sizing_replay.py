"""Pool sizing as the replay drives it: the working set's floor keeps a long tail on the GPUs."""

from __future__ import annotations

from imagefleet.pool.replay import Setup, replay
from imagefleet.pool.sizing import WORKING_SET_SECONDS
from imagefleet.pool.trace import Request

SETUP = Setup()  # sdxl on h100-80gb, fp16: 10 checkpoints on a pod's GPU


def rounds(count: int, checkpoints: int = 25, gap: float = 10.0) -> list[Request]:
    """`count` rounds over `checkpoints` checkpoints, one request every `gap` s, each checkpoint in turn: a
    trickle one pod serves (one 30-step image every 10 s), over more checkpoints than one pod's GPU holds."""
    return [Request(gap * i, f"ckpt-{i % checkpoints:02d}", (), steps=30, images=1)
            for i in range(count * checkpoints)]


def test_a_long_tail_over_more_checkpoints_than_one_gpu_holds_stays_resident_once_loaded() -> None:
    assert 25 * 10.0 < WORKING_SET_SECONDS  # every checkpoint is in the working set from its first round on
    short, long = replay(rounds(3), SETUP, pooled=True), replay(rounds(6), SETUP, pooled=True)
    # The pool grows to the 3 pods 25 checkpoints need, and keeps them.
    assert short.pods_started == long.pods_started == 3
    # The misses are the first rounds' (loads while the pool grows): three more rounds add none.
    misses = short.requests - short.hits
    assert misses < 2 * 25
    assert long.requests - long.hits == misses
