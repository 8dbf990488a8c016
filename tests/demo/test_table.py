"""The demo's live table, from resource objects as the API server returns them."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from imagefleet.autoscaling.loop import SCALING
from imagefleet.demo.table import fleet_view, last_decision, state


def resource(name: str, status: dict[str, Any]) -> dict[str, Any]:
    spec = {"tier": "bulk", "model": {"name": "sd35-medium"}, "gpuClass": "l4-24gb"}
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def render(resources: list[dict[str, Any]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(fleet_view(resources))
    return console.export_text()


def test_row_shows_replicas_queue_p95_and_last_decision() -> None:
    status = {
        "readyReplicas": 2,
        "desiredReplicas": 5,
        "queueDepth": 41.0,
        "p95Seconds": 1.234,
        "conditions": [
            condition("Ready", "True", "Ready"),
            condition("FitsGPU", "True", "Fits"),
            condition(SCALING, "True", "ScaledUp", "2 -> 5 replicas (queueDepth wins)"),
        ],
    }
    text = render([resource("thumbnails", status)])
    assert "thumbnails" in text
    assert "sd35-medium" in text and "l4-24gb" in text
    assert "2/5" in text
    assert "41" in text
    assert "1.23 s" in text
    assert "ScaledUp" in text
    assert "thumbnails: 2 -> 5 replicas (queueDepth wins)" in text


def test_refused_resource_shows_the_fit_message_instead_of_scaling() -> None:
    status = {"conditions": [condition("FitsGPU", "False", "InsufficientMemory", "needs ~34.5 GiB")]}
    assert state(status) == "[red]Refused[/]"
    assert last_decision(status) == ("InsufficientMemory", "needs ~34.5 GiB")


def test_new_resource_is_pending() -> None:
    assert state({}) == "Pending"
    assert last_decision({}) == ("-", "")
    assert "0/-" in render([resource("new", {})])
