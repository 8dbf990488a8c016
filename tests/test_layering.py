"""The import contracts in pyproject.toml ([tool.importlinter]) hold: the operator never
imports torch or the runtime, handlers sit above reconcile/autoscaling above builders,
builders and the autoscaling policy stay pure, and the emulated engine never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout
