"""Finding 9: a compromised gateway can write its demand signal and nothing else.

Attack, on the real API server with the chart installed: with the token of the chart's gateway
ServiceAccount (which RBAC lets patch ImageModelDeployments, for the demand annotation), rewrite a
tenant's spec, its labels, another annotation, its finalizers. The chart's ValidatingAdmissionPolicy
refuses each; the demand annotation itself is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.gateway.watch import DEMAND_ANNOTATION
from tests.chart.conftest import helm  # noqa: F401 - the helm binary
from tests.chart.test_gateway import gateway_kubeconfig  # noqa: F401 - the chart installed with the gateway
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once

ATTACKS: dict[str, dict[str, Any]] = {
    "spec": {"spec": {"replicas": 40, "model": {"name": "attacker/model"}}},
    "labels": {"metadata": {"labels": {"imagefleet.io/name": "someone-else"}}},
    "another annotation": {"metadata": {"annotations": {"kopf.zalando.org/last-handled-configuration": "{}"}}},
    "finalizers": {"metadata": {"finalizers": ["attacker.example/never-delete"]}},
}


def test_the_gateway_token_can_write_demand_and_nothing_else(
    cluster: Cluster, gateway_kubeconfig: Path, imd_crd: None, namespace: str
) -> None:
    admin = client.CustomObjectsApi(cluster.api_client)
    admin.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": "victim"},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "replicas": 1}})
    original = admin.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "victim")
    gateway = client.CustomObjectsApi(config.new_client_from_config(config_file=str(gateway_kubeconfig)))

    def patch(body: dict[str, Any], **kwargs: Any) -> Any:
        return gateway.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "victim", body, **kwargs)

    def refused(body: dict[str, Any], **kwargs: Any) -> str | None:
        """The API server's refusal of `body` by the gateway, or None if it was accepted."""
        try:
            patch(body, **kwargs)
        except ApiException as error:
            return f"{error.status} {error.body}"
        return None

    # The policy is in force once the API server has loaded it (a dry run changes nothing).
    wait_until(lambda: refused(ATTACKS["spec"], dry_run="All") is not None, timeout=30, interval=0.2,
               message="the admission policy to refuse the gateway a spec change")
    for name, body in ATTACKS.items():
        answer = refused(body)
        assert answer is not None, f"the gateway changed {name}"
        assert "imagefleet.io/demand-at" in answer and answer.startswith(("403", "422")), answer
    patch({"metadata": {"annotations": {DEMAND_ANNOTATION: "2026-12-06T08:00:00.000000Z"}}})
    after = admin.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "victim")
    assert after["metadata"]["annotations"][DEMAND_ANNOTATION] == "2026-12-06T08:00:00.000000Z"
    assert after["spec"] == original["spec"]
    assert after["metadata"].get("labels") == original["metadata"].get("labels")
    assert after["metadata"].get("finalizers") == original["metadata"].get("finalizers")
