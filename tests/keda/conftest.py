"""KEDA added to the session's control plane for the tests of one module, and what they share:
the ScaledObject that docs/keda.md recommends, made out for a test's resource."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefleet import metrics
from imagefleet.autoscaling import queries
from tests.conftest import Cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "keda.md"
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)
# The names docs/keda.md writes the example for.
DOC_NAMESPACE, DOC_NAME = "team-a", "portraits"
DOC_RATE_WINDOW = "[1m]"
KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS = "keda.sh", "v1alpha1", "scaledobjects"


@pytest.fixture(scope="module")
def keda(cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster with KEDA's operator and metrics server (built on first use)."""
    cluster.plane.add_keda(progress=lambda message: print(f"[keda] {message}"))
    try:
        yield cluster
    finally:
        cluster.plane.remove_keda()


def documented_scaled_object() -> dict[str, Any]:
    """The recommended ScaledObject, exactly as docs/keda.md shows it."""
    for block in YAML_BLOCK.findall(DOC.read_text()):
        found = yaml.safe_load(block)
        if isinstance(found, dict) and found.get("kind") == "ScaledObject":
            return found
    raise AssertionError(f"{DOC} shows no ScaledObject")


def gateway_selector(namespace: str, name: str) -> str:
    """The gateway's demand series of resource `namespace/name` (metrics.GATEWAY_RESOURCE_LABELS)."""
    namespace_label, name_label = metrics.GATEWAY_RESOURCE_LABELS
    return f'{{{namespace_label}="{namespace}",{name_label}="{name}"}}'


def scaled_object_for(
    namespace: str, name: str, prometheus_url: str, *, down_window: int, rate_window: str
) -> dict[str, Any]:
    """The documented ScaledObject for resource `namespace/name`, as a user fills it in: their
    names, their Prometheus, their resource's scale-down window and scrape-based rate window."""
    scaled = copy.deepcopy(documented_scaled_object())
    scaled["metadata"] = {"name": name, "namespace": namespace}
    scaled["spec"]["scaleTargetRef"]["name"] = name
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ] = down_window
    selectors = [
        (queries.selector(DOC_NAMESPACE, DOC_NAME), queries.selector(namespace, name)),
        (gateway_selector(DOC_NAMESPACE, DOC_NAME), gateway_selector(namespace, name)),
    ]
    for trigger in scaled["spec"]["triggers"]:
        metadata = trigger["metadata"]
        query = metadata["query"]
        assert sum(query.count(documented) for documented, _ in selectors) == 1, query
        for documented, ours in selectors:
            query = query.replace(documented, ours)
        metadata["query"] = query.replace(DOC_RATE_WINDOW, f"[{rate_window}]")
        metadata["serverAddress"] = prometheus_url
    return scaled
