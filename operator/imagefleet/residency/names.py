"""The names residency knows weights by: a pool pod's `/v1/load` and `imagefleet_resident` series, the
gateway's picker and the autoscaler's member status all spell them with these two functions."""

from __future__ import annotations


def checkpoint_key(name: str, revision: str | None) -> str:
    """`name`, or `name@revision` for a pinned revision."""
    return name if revision is None else f"{name}@{revision}"


def adapter_key(name: str, weight_name: str | None) -> str:
    """`name`, or `name/weight_name` for one file of the adapter's repo (its scale is applied per call,
    not loaded, so it is not part of the name)."""
    return name if weight_name is None else f"{name}/{weight_name}"
