"""The CRD generated from the pydantic models: checked in, structural, complete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet.crd.generate import build_crd, crd, render

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "crds" / "imagemodeldeployment.yaml"


def _schemas(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _schemas(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schemas(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schemas(schema["additionalProperties"], f"{path}{{}}")


def _root() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_matches_the_models() -> None:
    assert CHECKED_IN.read_text() == render(), (
        "crds/imagemodeldeployment.yaml is out of date: run `imagefleet crd -o crds/imagemodeldeployment.yaml`"
    )


def test_crd_command_prints_and_writes(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(crd, [])
    assert printed.exit_code == 0 and printed.output == render()
    target = tmp_path / "crd.yaml"
    written = runner.invoke(crd, ["--output", str(target)])
    assert written.exit_code == 0 and target.read_text() == render()


def test_names_scope_and_subresources() -> None:
    document = build_crd()
    assert document["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    spec = document["spec"]
    assert spec["names"]["kind"] == KIND and spec["names"]["shortNames"] == ["imd"]
    assert spec["names"]["categories"] == ["imagefleet"] and spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns_cover_the_contract() -> None:
    columns = {c["name"]: c for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    expected = {
        "Tier": ".spec.tier", "Model": ".spec.model.name", "Precision": ".spec.precision", "GPU": ".spec.gpuClass",
        "Ready": ".status.readyReplicas", "Desired": ".status.desiredReplicas", "P95": ".status.p95Seconds",
        "Age": ".metadata.creationTimestamp",
    }
    for name, path in expected.items():
        assert columns[name]["jsonPath"] == path
        assert columns[name].get("priority", 0) == 0, f"{name} must show without -o wide"


def test_schema_is_structural() -> None:
    for path, schema in _schemas(_root()):
        assert "$ref" not in schema and "$defs" not in schema, path
        assert "anyOf" not in schema and "allOf" not in schema and "oneOf" not in schema, path
        assert schema.get("additionalProperties") is not False, path
        assert "title" not in schema, path
        assert "type" in schema or schema.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if isinstance(schema.get("exclusiveMinimum"), bool):
            assert "minimum" in schema, path
        if "default" in schema:
            assert schema["default"] is not None, path


def test_optional_fields_are_plain_optional_and_required_ones_required() -> None:
    spec = _root()["properties"]["spec"]
    assert sorted(spec["required"]) == ["gpuClass", "model"]
    assert spec["properties"]["model"]["required"] == ["name"]
    batching = spec["properties"]["batching"]
    assert batching["type"] == "object" and "required" not in batching and "default" not in batching


def test_only_tier_independent_defaults_live_in_the_schema() -> None:
    spec = _root()["properties"]["spec"]["properties"]
    assert spec["tier"]["default"] == "standard"
    assert "default" not in spec["precision"]  # model-dependent: the catalog's preferred precision
    assert spec["replicas"]["default"] == 1
    assert spec["rollout"]["default"] == {"maxSurge": 0, "maxUnavailable": 1} and spec["rollout"]["properties"]["maxSurge"]["default"] == 0
    assert spec["autoscaling"]["properties"]["enabled"]["default"] is False
    tier_dependent = [
        spec["autoscaling"]["properties"][name]
        for name in ("minReplicas", "maxReplicas", "targetQueueDepth", "targetP95Seconds")
    ] + [spec["batching"]["properties"][name] for name in ("maxBatchSize", "queueSize")]
    assert all("default" not in field for field in tier_dependent)


def test_the_batching_delay_stays_accepted_and_says_it_is_deprecated() -> None:
    """Manifests that set it must still apply under kubectl's strict field validation."""
    delay = _root()["properties"]["spec"]["properties"]["batching"]["properties"]["maxDelayMilliseconds"]
    assert (delay["type"], delay["minimum"], delay["maximum"]) == ("integer", 0, 60_000) and "default" not in delay
    assert delay["description"].startswith("Deprecated, no effect")


def test_enums_ranges_and_cel_rules() -> None:
    root = _root()
    spec = root["properties"]["spec"]["properties"]
    assert spec["precision"]["enum"] == ["fp16", "bf16", "fp32"]
    assert spec["tier"]["enum"] == ["bulk", "standard", "premium"]
    assert spec["generation"]["properties"]["maxWidth"]["multipleOf"] == 8
    rules = [rule for _, schema in _schemas(root) for rule in schema.get("x-kubernetes-validations", [])]
    messages = " ".join(rule["message"] for rule in rules)
    for field in ("spec.autoscaling.minReplicas", "spec.generation.defaultWidth", "spec.batching.queueSize",
                  "spec.model.name", "spec.rollout.maxSurge", "metadata.name"):
        assert field in messages
    assert all(rule["rule"] and rule["message"] for rule in rules)


def test_status_conditions_follow_the_api_conventions() -> None:
    conditions = _root()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_checked_in_file_is_valid_yaml_with_a_header() -> None:
    text = CHECKED_IN.read_text()
    assert text.startswith("# Generated by `imagefleet crd`")
    assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
