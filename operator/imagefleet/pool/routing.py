"""Routing by residency: which pod of a pool serves a request for a checkpoint and its adapters.

Each pod is priced by when the request would finish there: the work already waiting at it, the
swap it would cost (nothing when the checkpoint is on its GPU and the adapters are loaded; the
host-to-GPU or disk-to-GPU time of the checkpoint otherwise, plus each missing adapter's load),
and the request's own time. The rules on top of that:

- Residency first: a pod that holds the checkpoint and adapters and finishes the request within
  its target is preferred to any pod that would swap, however idle; and among pods that would
  swap and push out as much (see the next rules), the one with the least to move (the checkpoint
  in its host RAM before one on disk) while it finishes within the target. A swap is never made,
  or made larger, to save queue time the target does not need.
- Weigh a swap against the queue it avoids: when no pod finishes within the target that way, the
  pod with the earliest finish wins, swap included. So a hot model spreads over more pods once
  one cannot serve it in time, and only then.
- No thrashing: a swap that evicts a checkpoint in use at the pod (requests pending there, or
  sent there within `RECENT_SECONDS`: the router's own memory, `Recent`) is also charged that
  checkpoint's swap back, so two hot models on one pod do not push each other out; the router
  puts the second on another pod instead.
- Fill free slots before evicting: among pods that would swap within the target, one with a free
  GPU slot is taken before one that would push a checkpoint off its GPU, even when the other holds
  the checkpoint in host RAM (a cheaper move). Otherwise a full pod that keeps a checkpoint in host
  RAM takes it back each time, pushing another to host RAM, and the pool swaps on every request
  while another pod's GPU has room for all of them.
- Keep the pool's copies: among pods that would move as much, one whose evicted checkpoint another
  pod also holds is taken before one that would push the pool's last copy of a checkpoint off the
  GPUs.

Pure: the gateway feeds it the pods' polled `/v1/load` (`resident`) and its own in-flight counts,
the replay its simulated pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..residency import SwapCost


# A checkpoint sent to a pod within this long is in use there (about the autoscaler's rate window).
RECENT_SECONDS = 60.0


@dataclass(frozen=True)
class Want:
    """What a request needs on the GPU."""

    checkpoint: str
    adapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resident:
    """What a pod holds, as its `/v1/load` `resident` says (most recent first)."""

    gpu: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()
    gpu_slots: int = 1  # checkpoints its GPU budget holds at once


@dataclass(frozen=True)
class SwapPrices:
    """Seconds to bring a checkpoint to the GPU from host RAM or from disk, and to load an adapter
    (the residency model's `swap_seconds`, from the catalog's bandwidths)."""

    host_seconds: float
    disk_seconds: float
    adapter_seconds: float


def swap_prices(cost: SwapCost, checkpoint_mib: float, adapter_mib: float) -> SwapPrices:
    """The prices of one family's moves on a GPU class (the residency model's `move_seconds`, summed
    along each path): host to GPU over the card's link, disk to GPU through host RAM, an adapter
    from disk with its fixed load work."""
    link = 0.0 if cost.host_to_gpu_mib_per_second is None else 1.0 / cost.host_to_gpu_mib_per_second
    disk = 1.0 / cost.disk_to_host_mib_per_second
    return SwapPrices(host_seconds=checkpoint_mib * link, disk_seconds=checkpoint_mib * (disk + link),
                      adapter_seconds=adapter_mib * (disk + link) + cost.adapter_load_seconds)


@dataclass(frozen=True)
class PodView:
    """One ready pod of the pool, as the router sees it."""

    url: str
    resident: Resident
    wait_seconds: float  # work ahead of a new request at the pod, in seconds
    # Checkpoints in use at the pod: requests sent and not answered, or sent lately (`Recent`).
    pending: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """A pod's price for one request."""

    url: str
    holds: bool  # the checkpoint is on its GPU and the adapters are loaded
    swap_seconds: float
    evicts: tuple[str, ...]  # pending checkpoints the swap pushes off the GPU
    displaced: int  # checkpoints the swap pushes off the last GPU of the pool that held them
    finish_seconds: float  # wait + swap + the request's own time
    cost: float  # finish, plus the swap back of what it evicts
    pushed_out: int = 0  # checkpoints the swap pushes off the pod's GPU, in use or not


def swap_seconds(want: Want, resident: Resident, prices: SwapPrices) -> float:
    """What serving `want` on a pod holding `resident` costs before the request can run."""
    if want.checkpoint in resident.gpu:
        checkpoint = 0.0
    elif want.checkpoint in resident.host:
        checkpoint = prices.host_seconds
    else:
        checkpoint = prices.disk_seconds
    missing = sum(1 for adapter in want.adapters if adapter not in resident.adapters)
    return checkpoint + missing * prices.adapter_seconds


def evicted(want: Want, resident: Resident) -> tuple[str, ...]:
    """The checkpoints bringing `want.checkpoint` to the GPU pushes off it (least recent first)."""
    if want.checkpoint in resident.gpu:
        return ()
    over = len(resident.gpu) + 1 - max(1, resident.gpu_slots)
    return tuple(reversed(resident.gpu))[:max(0, over)]


def place(want: Want, pod: PodView, own_seconds: float, prices: SwapPrices,
          copies: Mapping[str, int] | None = None) -> Placement:
    """The pod's price for the request; `copies` counts the pods holding each checkpoint on the GPU."""
    swap = swap_seconds(want, pod.resident, prices)
    out = evicted(want, pod.resident)
    pushed = tuple(name for name in out if pod.pending.get(name, 0) > 0)
    last = sum(1 for name in out if (copies or {}).get(name, 1) <= 1)
    # What is evicted to host RAM comes back at the host-to-GPU price.
    penalty = len(pushed) * prices.host_seconds
    finish = pod.wait_seconds + swap + own_seconds
    holds = want.checkpoint in pod.resident.gpu and all(a in pod.resident.adapters for a in want.adapters)
    return Placement(pod.url, holds, swap, pushed, last, finish, finish + penalty, len(out))


def placements(want: Want, pods: Sequence[PodView], *, own_seconds: float, target_seconds: float,
               prices: SwapPrices) -> list[Placement]:
    """Every pod's placement, best first by the rules above (ties keep the pods' order)."""
    copies = gpu_copies(pods)
    priced = [place(want, pod, own_seconds, prices, copies) for pod in pods]
    return sorted(priced, key=lambda p: rank(p, target_seconds))


class Recent:
    """When the router last sent each checkpoint to each pod: what it remembers of its own choices
    (swept of what is older than the window once per window, so pods gone leave nothing behind)."""

    def __init__(self, window: float = RECENT_SECONDS) -> None:
        self.window = window
        self._sent: dict[str, dict[str, float]] = {}
        self._swept = 0.0

    def sent(self, pod: str, checkpoint: str, now: float) -> None:
        self._sent.setdefault(pod, {})[checkpoint] = now
        if now - self._swept > self.window:
            self._swept = now
            for name in list(self._sent):
                if not self.in_use(name, now):
                    del self._sent[name]

    def in_use(self, pod: str, now: float) -> dict[str, int]:
        """The checkpoints sent to `pod` within the window (each counted once); older ones are forgotten."""
        sent = self._sent.get(pod, {})
        for checkpoint in [c for c, at in sent.items() if now - at > self.window]:
            del sent[checkpoint]
        return dict.fromkeys(sent, 1)

    def pods(self) -> int:
        return len(self._sent)


def gpu_copies(pods: Sequence[PodView]) -> dict[str, int]:
    """How many of the pods hold each checkpoint on the GPU."""
    copies: dict[str, int] = {}
    for pod in pods:
        for name in pod.resident.gpu:
            copies[name] = copies.get(name, 0) + 1
    return copies


# (class, checkpoints pushed off the pod's GPU, seconds, last copies pushed off, finish): lower is better.
Rank = tuple[int, int, float, int, float]


def rank(placement: Placement, target_seconds: float) -> Rank:
    """Lower is better (see the module docstring): a holding pod within the target, earliest finish
    first; then a pod that finishes within the target without pushing a checkpoint off its GPU (a
    free slot), then the least to move, then the fewest checkpoints pushed off the pool's GPUs (one
    another pod also holds before the last copy), then the earliest finish; then the rest by cost."""
    in_time = placement.finish_seconds <= target_seconds and not placement.evicts
    if placement.holds and in_time:
        return (0, 0, 0.0, 0, placement.finish_seconds)
    if in_time:
        return (1, placement.pushed_out, placement.swap_seconds, placement.displaced, placement.finish_seconds)
    return (2, 0, placement.cost, placement.displaced, 0.0)
