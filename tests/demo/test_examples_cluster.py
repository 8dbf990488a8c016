"""The API server accepts every sample resource (schema and CEL rules of the CRD)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.demo.scenario import example_files
from imagefleet.demo.stack import install_crd
from tests.conftest import Cluster


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
    )


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_api_server_accepts_example(cluster: Cluster, namespace: str, path: Any) -> None:
    install_crd(cluster.api_client)
    create(cluster, namespace, yaml.safe_load(path.read_text()))


def test_api_server_rejects_a_broken_example(cluster: Cluster, namespace: str) -> None:
    install_crd(cluster.api_client)
    body = yaml.safe_load(example_files()[0].read_text())
    body["spec"]["autoscaling"]["minReplicas"] = 9  # above maxReplicas 6
    with pytest.raises(ApiException) as error:
        create(cluster, namespace, body)
    assert error.value.status == 422
    assert "minReplicas" in error.value.body


@pytest.mark.parametrize("path", sorted((example_files()[0].parent / "real-cluster").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_api_server_accepts_real_cluster_example(cluster: Cluster, namespace: str, path: Any) -> None:
    install_crd(cluster.api_client)
    body = yaml.safe_load(path.read_text())
    if body["kind"] == "Secret":
        client.CoreV1Api(cluster.api_client).create_namespaced_secret(namespace, body, dry_run="All")
    else:
        create(cluster, namespace, body)
