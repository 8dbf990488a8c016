"""Finding 3: runtime pods take generations only from the gateway, and Prometheus only on their metrics
port, in every namespace.

On the real API server with the real operator: a resource in a tenant's namespace (not the operator's,
where the chart's old policy was the only one) gets a NetworkPolicy of its own that selects exactly its
runtime pods and admits the gateway on the generation port and Prometheus on the metrics port, nothing
else; deleted, it comes back. The
local fleet has no network plugin that enforces NetworkPolicies, so the check is of the objects the
API server holds (any enforcing plugin, e.g. Calico or Cilium, then applies them).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet.builders.labels import selector_labels
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import OperatorFactory, imd_crd, operator_factory  # noqa: F401
from tests.operator.harness import Imds

GATEWAY: list[dict[str, Any]] = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "imagefleet-system"}},
     "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}},
]
PROMETHEUS: list[dict[str, Any]] = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
]


def test_each_resource_gets_a_policy_admitting_the_gateway_to_generations_and_prometheus_to_metrics(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory
) -> None:
    operator_factory(namespace, {"IMAGEFLEET_RUNTIME_INGRESS_FROM": json.dumps(GATEWAY),
                                 "IMAGEFLEET_RUNTIME_METRICS_FROM": json.dumps(PROMETHEUS)})
    imds = Imds(cluster.api_client, namespace)
    imd = imds.create("portraits", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 1})
    networking = client.NetworkingV1Api(cluster.api_client)

    def policy() -> client.V1NetworkPolicy | None:
        try:
            return networking.read_namespaced_network_policy("portraits", namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    wait_until(lambda: policy() is not None, timeout=60, message="the resource's NetworkPolicy")
    created = policy()
    assert created is not None
    assert created.spec.pod_selector.match_labels == selector_labels("portraits")
    assert created.spec.policy_types == ["Ingress"]
    rules = [([cluster.api_client.sanitize_for_serialization(peer) for peer in rule._from],
              [(port.port, port.protocol) for port in rule.ports]) for rule in created.spec.ingress]
    assert rules == [(GATEWAY, [("http", "TCP")]), (PROMETHEUS, [("metrics", "TCP")])]
    assert [ref.uid for ref in created.metadata.owner_references] == [imd["metadata"]["uid"]]

    networking.delete_namespaced_network_policy("portraits", namespace)
    wait_until(lambda: (p := policy()) is not None and p.metadata.uid != created.metadata.uid, timeout=60,
               message="the NetworkPolicy to be restored")
