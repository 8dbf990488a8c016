"""The chart against the real local API server: server-side dry run, install, upgrade, GitOps re-apply."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import wait_until

from .helm import CHART, Helm, kubectl


@pytest.fixture(scope="module")
def crds_installed(cluster: Cluster) -> None:
    """The chart's CRDs, applied once (Helm installs crds/ only on first install, never on dry runs)."""
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), kubeconfig=cluster.kubeconfig)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/imagemodeldeployments.imagefleet.io",
            "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev", kubeconfig=cluster.kubeconfig)


@pytest.fixture
def release(helm: Helm, cluster: Cluster, namespace: str) -> Iterator[str]:
    """A unique release name (cluster-scoped RBAC objects carry it); uninstalled afterwards."""
    name = "if-" + uuid.uuid4().hex[:6]
    yield name
    helm.run("uninstall", name, "--namespace", namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False)


def manifests(helm: Helm, release: str, namespace: str, values: dict[str, Any]) -> str:
    return helm.with_values("template", release, str(CHART), "--namespace", namespace, values=values).stdout


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces"])
def test_rendered_manifests_are_accepted_by_the_api_server(
    helm: Helm, cluster: Cluster, namespace: str, crds_installed: None, mode: str
) -> None:
    values: dict[str, Any] = {"podDisruptionBudget": {"enabled": True}, "replicaCount": 2}
    if mode == "watch-namespaces":
        values["watchNamespaces"] = [namespace]
    rendered = manifests(helm, "dry-" + uuid.uuid4().hex[:6], namespace, values)
    result = kubectl("apply", "--dry-run=server", "-f", "-", kubeconfig=cluster.kubeconfig, stdin=rendered)
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    assert {"deployment.apps", "clusterrole.rbac.authorization.k8s.io", "serviceaccount", "configmap"} <= kinds


def test_install_and_upgrade(helm: Helm, cluster: Cluster, namespace: str, crds_installed: None, release: str) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    installed = helm.with_values("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "2m",
                                 values={"peering": {"enabled": True, "name": release}}, kubeconfig=cluster.kubeconfig)
    # NOTES.txt tells the user what to do next, with this release's names.
    assert f"kubectl -n {namespace} rollout status deployment/{release}-imagefleet" in installed.stdout
    assert "kind: ImageModelDeployment" in installed.stdout
    deployment = apps.read_namespaced_deployment(release + "-imagefleet", namespace)
    assert deployment.spec.replicas == 1
    helm.with_values("upgrade", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "2m",
                     values={"replicaCount": 2, "peering": {"enabled": True, "name": release},
                             "prometheus": {"url": "http://prometheus.example:9090"}},
                     kubeconfig=cluster.kubeconfig)
    status = json.loads(helm.run("status", release, "--namespace", namespace, "-o", "json",
                                 kubeconfig=cluster.kubeconfig).stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 2
    deployment = apps.read_namespaced_deployment(release + "-imagefleet", namespace)
    assert deployment.spec.replicas == 2
    wait_until(lambda: apps.read_namespaced_deployment(release + "-imagefleet", namespace).status.ready_replicas == 2,
               timeout=60, message="two operator replicas scheduled and ready")
    env = {item.name: item.value for item in deployment.spec.template.spec.containers[0].env}
    assert env["IMAGEFLEET_PROMETHEUS_URL"] == "http://prometheus.example:9090"


def test_bad_values_are_refused_at_install(helm: Helm, cluster: Cluster, namespace: str, release: str) -> None:
    result = helm.with_values("install", release, str(CHART), "--namespace", namespace,
                              values={"prometheus": {"url": "prometheus:9090"}}, kubeconfig=cluster.kubeconfig,
                              check=False)
    assert result.returncode != 0
    assert "/prometheus/url" in result.stderr
    listed = helm.run("list", "--namespace", namespace, "-q", kubeconfig=cluster.kubeconfig).stdout
    assert release not in listed


def test_applying_the_same_manifests_twice_changes_nothing(
    helm: Helm, cluster: Cluster, namespace: str, crds_installed: None, tmp_path: Path
) -> None:
    """GitOps: `helm template | kubectl apply` converges; the second apply and `kubectl diff` see no change."""
    name = "gitops-" + uuid.uuid4().hex[:6]
    path = tmp_path / "rendered.yaml"
    path.write_text(manifests(helm, name, namespace, {"watchNamespaces": [namespace]}))
    try:
        kubectl("apply", "-f", str(path), kubeconfig=cluster.kubeconfig)
        second = kubectl("apply", "-f", str(path), kubeconfig=cluster.kubeconfig).stdout.splitlines()
        assert second and all(line.endswith(" unchanged") for line in second), second
        diff = kubectl("diff", "-f", str(path), kubeconfig=cluster.kubeconfig, check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(path), kubeconfig=cluster.kubeconfig)
