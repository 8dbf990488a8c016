"""The reference pages generated from the code (`python -m imagefleet_docs`) are checked in as
generated, and cover what the code defines: drift fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imagefleet import metrics as names
from imagefleet.cli import COMMANDS
from imagefleet.config import OperatorSettings
from imagefleet_docs import __main__ as generate
from imagefleet_docs.helm_values import CHART, ROOT, comments
from imagefleet_runtime.settings import Settings as RuntimeSettings

PAGES = sorted(generate.PAGES, key=str)


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_checked_in_page_is_what_the_code_generates(page: Path) -> None:
    assert page.read_text() == generate.PAGES[page](), (
        f"{page.relative_to(ROOT)} is out of date: run `python -m imagefleet_docs`"
    )


def _page(name: str) -> str:
    return (ROOT / "docs" / "reference" / name).read_text()


def test_every_metric_name_is_in_the_metrics_reference() -> None:
    text = _page("metrics.md")
    defined = [value for value in vars(names).values()
               if isinstance(value, str) and value.startswith(names.PREFIX) and value != names.PREFIX]
    assert defined
    for name in defined:
        assert f"`{name}`" in text or f"`{name}_" in text, name


def test_every_setting_is_in_the_environment_reference() -> None:
    text = _page("environment.md")
    for settings in (OperatorSettings, RuntimeSettings):
        for field in settings.model_fields:
            assert f"`IMAGEFLEET_{field.upper()}`" in text, field


def test_every_command_is_in_the_cli_reference() -> None:
    text = _page("cli.md")
    for command in COMMANDS:
        assert f"### `imagefleet {command}`" in text, command


def test_every_values_key_is_in_the_values_reference_and_the_chart_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for page in (ROOT / "docs" / "reference" / "helm-values.md", CHART / "README.md"):
        text = page.read_text()
        for key in values:
            assert f"| `{key}" in text, f"{key} missing from {page.relative_to(ROOT)}"


def test_values_comments_are_read_by_key_path() -> None:
    text = "# -- top\na:\n  # not this\n  # -- the b\n  b: 1\n  c:\n    - d: 2\n# free text\nx: 1\n"
    assert comments(text) == {"a": "top", "a.b": "the b", "x": "free text"}


def test_check_mode_reports_a_missing_page_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = ROOT / "docs" / "reference" / "never-generated.md"
    monkeypatch.setattr(generate, "PAGES", {page: lambda: "new\n"})
    assert generate.main(["--check"]) == 1
    assert "docs/reference/never-generated.md" in capsys.readouterr().err
    assert not page.exists()
