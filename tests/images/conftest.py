"""The images, built once per machine (imagefleet.dev.images keeps them in buildah's storage,
tagged by their inputs), on a Debian bookworm base made locally."""

from __future__ import annotations

import pytest

from imagefleet.dev import images
from tests.chart.conftest import helm  # noqa: F401 - the chart's helm fixture
from tests.chart.helm import ROOT
from tests.operator.conftest import imd_crd  # noqa: F401

# The tests that use the runtime image: its cold build (about 16 minutes) is part of their setup.
RUNTIME_IMAGE_TIMEOUT_SECONDS = 2400


def _report(what: str, image: images.Image) -> None:
    built = "found in storage" if image.build_seconds is None else f"built in {image.build_seconds:.0f}s"
    print(f"[images] {what} {image.reference}: {image.size_bytes / 1e6:.0f} MB, {built}")


@pytest.fixture(scope="session")
def base_image() -> str:
    base = images.base_image(progress=lambda message: print(f"[images] {message}"))
    _report("base", base)
    return base.reference


@pytest.fixture(scope="session")
def operator_image(base_image: str) -> images.Image:
    image = images.build(images.OPERATOR, ROOT, base_image, progress=lambda message: print(f"[images] {message}"))
    _report("operator", image)
    return image


@pytest.fixture(scope="session")
def runtime_image(base_image: str) -> images.Image:
    image = images.build(images.RUNTIME, ROOT, base_image, progress=lambda message: print(f"[images] {message}"))
    _report("runtime", image)
    return image
