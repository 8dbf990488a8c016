"""The CRD field reference in docs/ is generated from the schema and kept in step with it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from imagefleet.crd.generate import build_crd
from imagefleet.crd.reference import crd_reference, render_reference

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "docs" / "reference" / "imagemodeldeployment.md"


def test_checked_in_reference_matches_the_schema() -> None:
    assert CHECKED_IN.read_text() == render_reference(), (
        "docs/reference/imagemodeldeployment.md is out of date: run "
        "`imagefleet crd-reference -o docs/reference/imagemodeldeployment.md`"
    )


def test_every_spec_and_status_field_is_documented() -> None:
    text = render_reference()
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def fields(schema: dict, path: str) -> list[tuple[str, str]]:
        found = []
        for name, child in schema.get("properties", {}).items():
            found.append((path, name))
            found += fields(child, f"{path}.{name}")
        if isinstance(schema.get("items"), dict):
            found += fields(schema["items"], f"{path}[]")
        return found

    for section in ("spec", "status"):
        for path, name in fields(root["properties"][section], section):
            table = text.split(f"### `{path}`\n", 1)
            assert len(table) == 2, f"no table for {path}"
            assert f"| `{name}` |" in table[1].split("\n### ", 1)[0], f"{path}.{name} is missing from its table"


def test_command_prints_and_writes(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(crd_reference, [])
    assert printed.exit_code == 0 and printed.output == render_reference()
    target = tmp_path / "reference.md"
    assert runner.invoke(crd_reference, ["-o", str(target)]).exit_code == 0
    assert target.read_text() == render_reference()
