"""The live view: one row per ImageModelDeployment, what a platform engineer watches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from imagefleet import conditions
from imagefleet.autoscaling.loop import SCALING
from imagefleet.demo.scenario import Answer, WindowFigures, window_figures

HEADERS = (
    "NAME", "TIER", "MODEL", "GPU", "READY/DESIRED", "QUEUE", "P95", "CLIENT P95", "IMG/MIN", "STATE", "LAST DECISION"
)


def fleet_view(
    resources: Iterable[Mapping[str, Any]],
    title: str | None = None,
    clients: Mapping[str, WindowFigures] | None = None,
) -> Group:
    """The table, then each resource's last decision in full (too long for a cell).

    P95 is the operator's (Prometheus, over the pods); CLIENT P95 and IMG/MIN are what the
    demo's clients saw over the last WINDOW_SECONDS.
    """
    ordered = sorted(resources, key=lambda r: str(r["metadata"]["name"]))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in HEADERS:
        table.add_column(header, no_wrap=True)
    details = []
    for resource in ordered:
        name, spec, status = resource["metadata"]["name"], resource.get("spec", {}), resource.get("status") or {}
        reason, message = last_decision(status)
        seen = (clients or {}).get(name)
        table.add_row(
            name,
            spec.get("tier", ""),
            spec.get("model", {}).get("name", ""),
            spec.get("gpuClass", ""),
            f"{status.get('readyReplicas', 0)}/{status.get('desiredReplicas', '-')}",
            _number(status.get("queueDepth"), "{:g}"),
            _number(status.get("p95Seconds"), "{:.2f} s"),
            _number(seen.p95_seconds if seen else None, "{:.2f} s"),
            _number(seen.images_per_minute if seen else None, "{:.0f}"),
            state(status),
            reason,
        )
        if message:
            details.append(Text(f"  {name}: {message}"))
    return Group(table, *details)


def before_after_view(
    resources: Mapping[str, Mapping[str, Any]],
    answers: list[Answer],
    before: tuple[float, float],
    after: tuple[float, float] | None,
) -> Table:
    """Each loaded tier as its clients saw it at the start of the burst and at its end, after the scale-up."""
    table = Table(
        title=(
            "at the clients (emulated GPUs): p95 of the requests sent in the burst's first 30 s (one replica) "
            "and in its last 30 s (after the scale-up); images/min and failed answers (429 or error) in those windows"
        ),
        title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )
    for header in ("NAME", "TIER", "TARGET P95", "P95 BEFORE", "P95 AFTER", "IMG/MIN BEFORE", "IMG/MIN AFTER",
                   "FAILED BEFORE", "FAILED AFTER"):
        table.add_column(header, no_wrap=True)
    for name in sorted({answer.resource for answer in answers}):
        spec = resources.get(name, {}).get("spec", {})
        first = window_figures(answers, name, *before)
        last = window_figures(answers, name, *after) if after else None
        table.add_row(
            name,
            spec.get("tier", ""),
            _number((spec.get("autoscaling") or {}).get("targetP95Seconds"), "{:g} s"),
            _number(first.p95_seconds, "{:.2f} s"),
            _number(last.p95_seconds if last else None, "{:.2f} s"),
            _number(first.images_per_minute, "{:.0f}"),
            _number(last.images_per_minute if last else None, "{:.0f}"),
            str(first.errors),
            str(last.errors) if last else "-",
        )
    return table


def state(status: Mapping[str, Any]) -> str:
    """Ready, Refused (does not fit its GPU class), or the Ready condition's reason."""
    found = status.get("conditions")
    fits = conditions.find(found, conditions.FITS_GPU)
    if fits is not None and fits.get("status") == conditions.FALSE:
        return "[red]Refused[/]"
    ready = conditions.find(found, conditions.READY)
    if ready is None:
        return "Pending"
    if ready.get("status") == conditions.TRUE:
        return "[green]Ready[/]"
    return f"[yellow]{ready.get('reason', 'NotReady')}[/]"


def last_decision(status: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) of the autoscaler's last decision, or of the refusal for a resource that never runs."""
    found = status.get("conditions")
    fits = conditions.find(found, conditions.FITS_GPU)
    if fits is not None and fits.get("status") == conditions.FALSE:
        return str(fits.get("reason", "")), str(fits.get("message", ""))
    scaling = conditions.find(found, SCALING)
    if scaling is None:
        return "-", ""
    return str(scaling.get("reason", "")), str(scaling.get("message", ""))


def _number(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)
