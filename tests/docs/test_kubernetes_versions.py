"""The supported Kubernetes versions are stated once, as the chart's kubeVersion says, and that lowest
version runs what the operator's runtime pods use: a preStop `sleep` hook is on by default from 1.30."""

from __future__ import annotations

import re

import yaml

from tests.lint.manifests import operator_output

from .yaml_blocks import ROOT

CHART_YAML = ROOT / "charts" / "imagefleet" / "Chart.yaml"
INSTALL = ROOT / "docs" / "install.md"
# PodLifecycleSleepAction: beta and on by default in Kubernetes 1.30.
SLEEP_HOOK_MINOR = 30


def lowest_minor() -> int:
    version = yaml.safe_load(CHART_YAML.read_text())["kubeVersion"]
    match = re.fullmatch(r">=1\.(\d+)\.0-0", version)
    assert match, f"Chart.yaml kubeVersion {version!r} is not a lower bound"
    return int(match.group(1))


def test_install_md_states_the_charts_lowest_version() -> None:
    text = INSTALL.read_text()
    minor = lowest_minor()
    assert f"**1.{minor} and newer.**" in text
    assert f"the chart's `kubeVersion` is `>=1.{minor}.0-0`" in text


def test_the_runtime_pods_stop_with_the_sleep_hook_that_the_lowest_version_has() -> None:
    deployments = [doc for doc in operator_output() if doc["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "sleep" in container["lifecycle"]["preStop"], "install.md explains 1.30 by the sleep hook"
    assert lowest_minor() >= SLEEP_HOOK_MINOR
