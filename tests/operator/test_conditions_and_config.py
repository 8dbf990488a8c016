"""Condition helpers (API conventions) and the operator settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet import conditions as c
from imagefleet.catalog import CatalogError
from imagefleet.config import DEFAULT_RUNTIME_IMAGE, OperatorSettings


def test_set_condition_fills_every_field() -> None:
    [condition] = c.set_condition([], c.READY, c.FALSE, "Creating", "creating", generation=3, timestamp="T1")
    assert condition == {"type": "Ready", "status": "False", "reason": "Creating", "message": "creating",
                         "lastTransitionTime": "T1", "observedGeneration": 3}


def test_transition_time_changes_only_with_the_status() -> None:
    first = c.set_condition([], c.READY, c.FALSE, "Creating", "a", generation=1, timestamp="T1")
    same_status = c.set_condition(first, c.READY, c.FALSE, "RollingOut", "b", generation=2, timestamp="T2")
    assert same_status[0]["lastTransitionTime"] == "T1" and same_status[0]["reason"] == "RollingOut"
    flipped = c.set_condition(same_status, c.READY, c.TRUE, "AllReplicasReady", "c", generation=2, timestamp="T3")
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_set_condition_keeps_other_conditions_and_their_order() -> None:
    existing = [{"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "", "lastTransitionTime": "T"}]
    updated = c.set_condition(existing, c.READY, c.TRUE, "AllReplicasReady", "ok", generation=1, timestamp="T1")
    assert [x["type"] for x in updated] == ["Scaling", "Ready"] and updated[0] == existing[0]
    again = c.set_condition(updated, "Scaling", c.FALSE, "Steady", "", generation=1, timestamp="T2")
    assert [x["type"] for x in again] == ["Scaling", "Ready"]


def test_transitions_report_status_changes_only() -> None:
    old = c.set_condition([], c.READY, c.FALSE, "Creating", "", generation=1, timestamp="T")
    new = c.set_condition(old, c.READY, c.FALSE, "RollingOut", "", generation=1)
    assert c.transitions(old, new) == []
    flipped = c.set_condition(new, c.READY, c.TRUE, "AllReplicasReady", "", generation=1)
    assert [(t, before) for t, before, _ in c.transitions(new, flipped)] == [("Ready", "False")]
    assert [(t, before) for t, before, _ in c.transitions(None, flipped)] == [("Ready", None)]


def test_now_is_rfc3339_utc() -> None:
    assert c.now().endswith("Z") and "T" in c.now() and len(c.now()) == 20


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROMETHEUS_URL", "GPU_CLASSES_FILE", "RUNTIME_IMAGE", "NAMESPACES", "PEERING",
                 "AUTOSCALE_INTERVAL_SECONDS", "RESYNC_SECONDS"):
        monkeypatch.delenv(f"IMAGEFLEET_{name}", raising=False)
    settings = OperatorSettings()
    assert settings.runtime_image == DEFAULT_RUNTIME_IMAGE and settings.autoscale_interval_seconds == 15
    assert settings.namespace_list == [] and settings.peering is None and settings.prometheus_url is None
    assert "cpu" in settings.gpu_classes


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    catalog = tmp_path / "classes.yaml"
    catalog.write_text("classes:\n  - {name: only, device: cpu, memoryMiB: 1024, precisions: [fp32]}\n")
    monkeypatch.setenv("IMAGEFLEET_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("IMAGEFLEET_PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("IMAGEFLEET_GPU_CLASSES_FILE", str(catalog))
    monkeypatch.setenv("IMAGEFLEET_PEERING", "imagefleet")
    monkeypatch.setenv("IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS", "5")
    settings = OperatorSettings()
    assert settings.namespace_list == ["team-a", "team-b"] and settings.peering == "imagefleet"
    assert settings.prometheus_url == "http://prometheus:9090" and settings.autoscale_interval_seconds == 5
    assert list(settings.gpu_classes) == ["only"]


def test_bad_catalog_file_surfaces_at_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGEFLEET_GPU_CLASSES_FILE", str(tmp_path / "none.yaml"))
    with pytest.raises(CatalogError, match="none.yaml"):
        OperatorSettings().gpu_classes
