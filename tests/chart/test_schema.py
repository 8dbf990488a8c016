"""values.schema.json refuses bad values before anything reaches the cluster, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from .helm import CHART, Helm

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("misspelled key", {"replicas": 2}, ["additional properties 'replicas' not allowed"]),
    ("zero replicas", {"replicaCount": 0}, ["/replicaCount", "minimum"]),
    ("replicas without peering", {"replicaCount": 2, "peering": {"enabled": False, "name": "x"}},
     ["/peering/enabled", "true"]),
    ("prometheus url without scheme", {"prometheus": {"url": "prometheus:9090"}}, ["/prometheus/url", "pattern"]),
    ("pull policy", {"image": {"repository": "r", "pullPolicy": "Sometimes"}}, ["/image/pullPolicy", "Always"]),
    ("namespace not a DNS label", {"watchNamespaces": ["Team_A"]}, ["/watchNamespaces/0", "pattern"]),
    ("interval as a string", {"autoscaler": {"intervalSeconds": "15s"}}, ["/autoscaler/intervalSeconds", "integer"]),
    ("unknown gpu device", {"gpuClasses": {"t4-16gb": {"device": "gpu"}}}, ["/gpuClasses/t4-16gb/device"]),
    ("gpu class without memory", {"gpuClasses": {"mi300x": {"device": "cuda", "precisions": ["fp16"]}}},
     ["/gpuClasses/mi300x", "memoryMiB"]),
    ("unknown precision", {"gpuClasses": {"cpu": {"precisions": ["int8"]}}}, ["/gpuClasses/cpu/precisions/0"]),
    ("gpu class field typo", {"gpuClasses": {"cpu": {"memoryMib": 1024}}}, ["'memoryMib' not allowed"]),
    ("liveness port", {"livenessProbe": {"enabled": True, "port": 80}}, ["/livenessProbe/port", "minimum"]),
]


@pytest.mark.parametrize(("values", "fragments"), [case[1:] for case in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_with_the_key_in_the_message(
    helm: Helm, values: dict[str, Any], fragments: list[str]
) -> None:
    result = helm.with_values("template", "imagefleet", str(CHART), values=values, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
