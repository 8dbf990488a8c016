"""The sample resources in examples/ say what their comments say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefleet import GROUP, KIND, VERSION
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.fit import FITS, INSUFFICIENT_MEMORY, check_fit
from imagefleet.resolve import resolve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# file -> (tier, FitsGPU status, reason)
EXPECTED = {
    "bulk-thumbnails.yaml": ("bulk", "True", FITS),
    "premium-renders.yaml": ("premium", "True", FITS),
    "refused-flux-on-l4.yaml": ("premium", "False", INSUFFICIENT_MEMORY),
}


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(document, dict)
    return document


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_fits_as_its_comment_says(name: str) -> None:
    document = load(name)
    assert document["apiVersion"] == f"{GROUP}/{VERSION}"
    assert document["kind"] == KIND
    spec = ImageModelDeploymentSpec.model_validate(document["spec"])
    tier, status, reason = EXPECTED[name]
    classes = load_gpu_classes()
    fit = check_fit(resolve(spec, classes), classes)
    assert (spec.tier, fit.status, fit.reason) == (tier, status, reason), fit.message


def test_refused_example_names_a_class_that_fits() -> None:
    spec = ImageModelDeploymentSpec.model_validate(load("refused-flux-on-l4.yaml")["spec"])
    classes = load_gpu_classes()
    message = check_fit(resolve(spec, classes), classes).message
    assert "h100-80gb" in message


REAL_CLUSTER = EXAMPLES / "real-cluster"
# The demo's examples of gated models, each also in real-cluster/ with a token for its download.
GATED = ["bulk-thumbnails.yaml", "premium-renders.yaml"]


def test_real_cluster_examples_are_the_demo_ones_with_a_cache_that_uses_the_token_secret() -> None:
    assert sorted(p.name for p in REAL_CLUSTER.glob("*.yaml")) == sorted([*GATED, "hf-token.yaml"])
    secret = yaml.safe_load((REAL_CLUSTER / "hf-token.yaml").read_text())
    assert (secret["kind"], sorted(secret["stringData"])) == ("Secret", ["token"])
    for name in GATED:
        real = yaml.safe_load((REAL_CLUSTER / name).read_text())
        cache = real["spec"]["model"].pop("cache")
        assert real == load(name), f"real-cluster/{name} differs from {name} beyond spec.model.cache"
        assert cache["tokenSecretRef"] == {"name": secret["metadata"]["name"], "key": "token"}
        spec = ImageModelDeploymentSpec.model_validate({**real["spec"], "model": {**real["spec"]["model"], "cache": cache}})
        classes = load_gpu_classes()
        assert check_fit(resolve(spec, classes), classes).status == "True"
