"""Routing by residency: which pod of a pool serves a request for a checkpoint and its adapters.

Each pod is priced by when the request would finish there: the work already waiting at it, the
swap it would cost (nothing when the checkpoint is on its GPU and the adapters are loaded; the
host-to-GPU or disk-to-GPU time of the checkpoint otherwise, plus each missing adapter's load),
and the request's own time. Three rules on top of that:

- Residency first: a pod that holds the checkpoint and adapters and finishes the request within
  its target is preferred to any pod that would swap, however idle (a swap is never made to save
  queue time the target does not need).
- Weigh a swap against the queue it avoids: when no holding pod finishes within the target, the
  pod with the earliest finish wins, swap included. So a hot model spreads over more pods once
  one cannot serve it in time, and only then.
- No thrashing: a swap that evicts a checkpoint with requests still pending at the pod is also
  charged that checkpoint's swap back, so two hot models on one pod do not push each other out;
  the router puts the second on another pod instead.

Pure: the gateway feeds it the pods' polled `/v1/load` (`resident`) and its own in-flight counts,
the replay its simulated pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class PodView:
    """One ready pod of the pool, as the router sees it."""

    url: str
    resident: Resident
    wait_seconds: float  # work ahead of a new request at the pod, in seconds
    # Requests sent to the pod and not answered yet, by checkpoint.
    pending: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """A pod's price for one request."""

    url: str
    holds: bool  # the checkpoint is on its GPU and the adapters are loaded
    swap_seconds: float
    evicts: tuple[str, ...]  # pending checkpoints the swap pushes off the GPU
    finish_seconds: float  # wait + swap + the request's own time
    cost: float  # finish, plus the swap back of what it evicts


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


def place(want: Want, pod: PodView, own_seconds: float, prices: SwapPrices) -> Placement:
    swap = swap_seconds(want, pod.resident, prices)
    pushed = tuple(name for name in evicted(want, pod.resident) if pod.pending.get(name, 0) > 0)
    # What is evicted to host RAM comes back at the host-to-GPU price.
    penalty = len(pushed) * prices.host_seconds
    finish = pod.wait_seconds + swap + own_seconds
    holds = want.checkpoint in pod.resident.gpu and all(a in pod.resident.adapters for a in want.adapters)
    return Placement(pod.url, holds, swap, pushed, finish, finish + penalty)


def placements(want: Want, pods: Sequence[PodView], *, own_seconds: float, target_seconds: float,
               prices: SwapPrices) -> list[Placement]:
    """Every pod's placement, best first by the rules above (ties keep the pods' order)."""
    priced = [place(want, pod, own_seconds, prices) for pod in pods]
    return sorted(priced, key=lambda p: rank(p, target_seconds))


def rank(placement: Placement, target_seconds: float) -> tuple[int, float]:
    """Lower is better: a holding pod within the target first (earliest finish), then by cost."""
    in_time = placement.holds and placement.finish_seconds <= target_seconds
    return (0 if in_time else 1, placement.finish_seconds if in_time else placement.cost)
