"""Fixtures of the docs tests: the real helm binary (built once from Go modules)."""

from __future__ import annotations

import pytest

from imagefleet.dev.build import ensure_built
from imagefleet.dev.components import HELM
from tests.chart.helm import Helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = ensure_built([HELM], progress=lambda message: print(f"[helm] {message}"))["helm"]
    return Helm(binary=binary, home=tmp_path_factory.mktemp("helm-home"))
