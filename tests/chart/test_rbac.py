"""RBAC and pod security tested, not assumed.

The chart is installed for real; the operator then runs with a token of the chart's
ServiceAccount (TokenRequest API) and exactly the chart's environment and GPU class
ConfigMap, reconciles and autoscales an ImageModelDeployment in a namespace that
enforces the `restricted` Pod Security Standard, and the same token is refused
everything the operator does not own.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet.dev.prometheus import LocalPrometheus, Target
from tests.autoscaling.exporter import Exporter
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.harness import OperatorProcess, free_port

from .credentials import service_account_kubeconfig
from .helm import CHART, Helm, kubectl

IMD_NAME = "tiny"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


@dataclass(frozen=True)
class Scenario:
    release: str
    system_namespace: str
    workload_namespace: str
    service_account_kubeconfig: Path
    imd_file: Path
    operator_log: Path
    liveness_url: str


def user_manifest(namespace: str) -> dict[str, Any]:
    """The ImageModelDeployment as a user keeps it in Git."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageModelDeployment",
        "metadata": {"name": IMD_NAME, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny"},
            "tier": "standard",
            "precision": "fp32",
            "gpuClass": "cpu",
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 5,
                            "scaleUpStabilizationSeconds": 0},
        },
    }


def chart_operator_env(core: client.CoreV1Api, release: str, namespace: str, directory: Path) -> dict[str, str]:
    """The installed operator container's environment, its GPU class ConfigMap written to a local file
    and its metrics port a free one (pods have a network of their own; processes here share one)."""
    deployment = client.AppsV1Api(core.api_client).read_namespaced_deployment(f"{release}-imagefleet", namespace)
    env = {item.name: item.value or "" for item in deployment.spec.template.spec.containers[0].env}
    assert env["IMAGEFLEET_METRICS_PORT"]
    catalog = directory / "gpu-classes.yaml"
    catalog.write_text(core.read_namespaced_config_map(f"{release}-imagefleet-gpu-classes", namespace)
                       .data["gpu-classes.yaml"])
    return env | {"IMAGEFLEET_GPU_CLASSES_FILE": str(catalog), "IMAGEFLEET_METRICS_PORT": str(free_port())}


def chart_service_account(cluster: Cluster, release: str, namespace: str) -> str:
    deployment = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(f"{release}-imagefleet", namespace)
    return str(deployment.spec.template.spec.service_account_name)


@pytest.fixture(scope="module")
def scenario(helm: Helm, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    core = client.CoreV1Api(cluster.api_client)
    work = tmp_path_factory.mktemp("rbac")
    suffix = uuid.uuid4().hex[:5]
    release, system, workload = f"rbac-{suffix}", f"imagefleet-system-{suffix}", f"team-{suffix}"
    core.create_namespace({"metadata": {"name": system}})
    core.create_namespace({"metadata": {"name": workload, "labels": RESTRICTED}})
    exporter = Exporter()
    exporter.queue_depth.set(40)  # 40 waiting requests / target 5 per replica: scale up to maxReplicas
    prometheus = LocalPrometheus(work / "prometheus")
    prometheus.set_targets([Target(exporter.address, {"namespace": workload, "imagefleet_io_name": IMD_NAME})])
    prometheus.start()
    operator: OperatorProcess | None = None
    imd_file = work / "imd.yaml"
    imd_file.write_text(yaml.safe_dump(user_manifest(workload)))
    try:
        helm.with_values("install", release, str(CHART), "--namespace", system, kubeconfig=cluster.kubeconfig, values={
            "peering": {"enabled": True, "name": release},
            "prometheus": {"url": prometheus.url},
            "autoscaler": {"intervalSeconds": 2},
        })
        kubeconfig = service_account_kubeconfig(cluster.api_client, cluster.kubeconfig, system,
                                                chart_service_account(cluster, release, system),
                                                work / "operator.kubeconfig")
        # The operator as the chart runs it: its ServiceAccount's token, its environment and catalog.
        operator = OperatorProcess(kubeconfig, None, work / "operator.log",
                                   chart_operator_env(core, release, system, work))
        operator.start()
        kubectl("apply", "-f", str(imd_file), kubeconfig=cluster.kubeconfig)
        yield Scenario(release, system, workload, kubeconfig, imd_file, operator.log_path,
                       f"http://127.0.0.1:{operator.liveness_port}/healthz")
    finally:
        # Deleted while the operator still runs: it releases its finalizer.
        kubectl("delete", "--ignore-not-found", "--timeout=60s", "-f", str(imd_file), kubeconfig=cluster.kubeconfig,
                check=False)
        if operator is not None:
            operator.stop()
        helm.run("uninstall", release, "--namespace", system, kubeconfig=cluster.kubeconfig, check=False)
        prometheus.stop()
        exporter.close()
        for namespace in (workload, system):
            core.delete_namespace(namespace)


def imd_status(cluster: Cluster, scenario: Scenario) -> dict[str, Any]:
    custom = client.CustomObjectsApi(cluster.api_client)
    body = custom.get_namespaced_custom_object(GROUP, VERSION, scenario.workload_namespace, PLURAL, IMD_NAME)
    return dict(body.get("status") or {})


def runtime_deployment(cluster: Cluster, scenario: Scenario) -> client.V1Deployment | None:
    items = client.AppsV1Api(cluster.api_client).list_namespaced_deployment(
        scenario.workload_namespace, label_selector=f"imagefleet.io/name={IMD_NAME}"
    ).items
    return items[0] if items else None


def test_operator_with_chart_credentials_reconciles(cluster: Cluster, scenario: Scenario) -> None:
    deployment = wait_until(lambda: runtime_deployment(cluster, scenario), timeout=90,
                            message="the operator (chart credentials) to create the runtime Deployment")
    assert deployment.metadata.owner_references[0].kind == "ImageModelDeployment"
    core = client.CoreV1Api(cluster.api_client)
    services = wait_until(lambda: core.list_namespaced_service(
        scenario.workload_namespace, label_selector=f"imagefleet.io/name={IMD_NAME}").items, timeout=60,
        message="the runtime Service")
    assert len(services) == 1
    status = wait_until(lambda: (s := imd_status(cluster, scenario)).get("conditions") and s, timeout=60,
                        message="status conditions written with the chart's credentials")
    assert {"Ready", "FitsGPU", "MetricsAvailable"} <= {c["type"] for c in status["conditions"]}
    with urllib.request.urlopen(scenario.liveness_url, timeout=5) as response:
        assert response.status == 200


def test_runtime_pods_pass_the_restricted_pod_security_standard(cluster: Cluster, scenario: Scenario) -> None:
    core = client.CoreV1Api(cluster.api_client)
    selector = f"imagefleet.io/name={IMD_NAME}"
    wait_until(lambda: core.list_namespaced_pod(scenario.workload_namespace, label_selector=selector).items,
               timeout=90, message="runtime pods admitted in a namespace enforcing `restricted`")
    events = core.list_namespaced_event(scenario.workload_namespace).items
    refused = [e.message for e in events if e.reason == "FailedCreate"]
    assert not refused, refused
    # The namespace really enforces it: a pod without a security context is refused.
    bare = {"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    with pytest.raises(ApiException) as refusal:
        core.create_namespaced_pod(scenario.workload_namespace, bare, dry_run="All")
    assert refusal.value.status == 403 and "violates PodSecurity" in refusal.value.body


def test_autoscaled_and_the_users_manifest_still_has_no_diff(cluster: Cluster, scenario: Scenario) -> None:
    """GitOps: the autoscaler writes status and the Deployment, never the user's spec."""
    status = wait_until(lambda: (s := imd_status(cluster, scenario)).get("desiredReplicas", 0) > 1 and s,
                        timeout=120, message="the autoscaler to scale up on queue depth from Prometheus")
    wait_until(lambda: runtime_deployment(cluster, scenario).spec.replicas == status["desiredReplicas"],
               timeout=60, message="the Deployment scaled to status.desiredReplicas")
    diff = kubectl("diff", "-f", str(scenario.imd_file), kubeconfig=cluster.kubeconfig, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    applied = kubectl("apply", "-f", str(scenario.imd_file), kubeconfig=cluster.kubeconfig)
    assert applied.stdout.strip().endswith("unchanged"), applied.stdout


ALLOWED = [
    ("watch", "imagemodeldeployments.imagefleet.io"),
    ("patch", "imagemodeldeployments.imagefleet.io/status"),
    ("watch", "imagemodelpools.imagefleet.io"),
    ("patch", "imagemodelpools.imagefleet.io/status"),
    ("create", "deployments.apps"),
    ("delete", "services"),
    ("create", "poddisruptionbudgets.policy"),
    ("delete", "poddisruptionbudgets.policy"),
    ("create", "events"),
    ("list", "pods"),
    ("list", "nodes"),
    ("watch", "pods"),
    ("watch", "nodes"),
    ("create", "jobs.batch"),
    ("watch", "persistentvolumeclaims"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("get", "secrets"),  # only the model cache's token check: a Secret a resource names
]
REFUSED = [
    ("list", "secrets"),
    ("delete", "persistentvolumeclaims"),
    ("watch", "secrets"),
    ("create", "configmaps"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("patch", "nodes"),
    ("create", "imagemodeldeployments.imagefleet.io"),
    ("delete", "imagemodeldeployments.imagefleet.io"),
    ("update", "imagemodeldeployments.imagefleet.io"),
    ("create", "imagemodelpools.imagefleet.io"),
    ("delete", "imagemodelpools.imagefleet.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("delete", "namespaces"),
    ("create", "statefulsets.apps"),
    ("update", "deployments.apps"),
    ("update", "poddisruptionbudgets.policy"),
    ("patch", "clusterkopfpeerings.kopf.dev/someone-else"),
]


def can_i(scenario: Scenario, verb: str, resource: str) -> bool:
    result = kubectl("auth", "can-i", verb, resource, "--namespace", scenario.workload_namespace,
                     kubeconfig=scenario.service_account_kubeconfig, check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stdout + result.stderr
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize(("verb", "allowed"), [
    *((verb, True) for verb in ("create", "get", "list", "watch", "patch", "delete")), ("update", False),
])
def test_service_account_has_exactly_the_operators_rights_on_inference_pools(
    scenario: Scenario, verb: str, allowed: bool
) -> None:
    """Asked of the authorizer directly (kubectl can-i cannot name a resource whose CRD is not installed)."""
    with config.new_client_from_config(config_file=str(scenario.service_account_kubeconfig)) as api_client:
        review = client.AuthorizationV1Api(api_client).create_self_subject_access_review({"spec": {
            "resourceAttributes": {"namespace": scenario.workload_namespace, "verb": verb,
                                   "group": "inference.networking.k8s.io", "resource": "inferencepools"}}})
    assert review.status.allowed is allowed


@pytest.mark.parametrize(("verb", "resource"), ALLOWED)
def test_service_account_may_do_what_the_operator_does(scenario: Scenario, verb: str, resource: str) -> None:
    assert can_i(scenario, verb, resource)


@pytest.mark.parametrize(("verb", "resource"), REFUSED)
def test_service_account_is_refused_what_the_operator_does_not_own(scenario: Scenario, verb: str, resource: str) -> None:
    assert not can_i(scenario, verb, resource)


def test_real_requests_with_the_operator_token_get_403(scenario: Scenario) -> None:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(scenario.service_account_kubeconfig))
    core = client.CoreV1Api(api)
    attempts = {
        "list secrets": lambda: core.list_namespaced_secret(scenario.workload_namespace),
        "list secrets in kube-system": lambda: core.list_namespaced_secret("kube-system"),
        "create a configmap": lambda: core.create_namespaced_config_map(
            scenario.workload_namespace, {"metadata": {"name": "x"}, "data": {}}),
        "delete the namespace": lambda: core.delete_namespace(scenario.workload_namespace, dry_run="All"),
        "create an ImageModelDeployment": lambda: client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, scenario.workload_namespace, PLURAL, user_manifest(scenario.workload_namespace)),
    }
    try:
        for what, attempt in attempts.items():
            with pytest.raises(ApiException) as refusal:
                attempt()
            assert refusal.value.status == 403, what
    finally:
        api.close()


def test_operator_never_hit_a_forbidden_request(cluster: Cluster, scenario: Scenario) -> None:
    wait_until(lambda: runtime_deployment(cluster, scenario), timeout=90, message="the runtime Deployment")
    log = scenario.operator_log.read_text(errors="replace")
    # An RBAC denial reads 'is forbidden: User "system:serviceaccount:..." cannot <verb> ...'.
    # (A 403 from namespace lifecycle, writing into another test's terminating namespace, is not one.)
    denials = re.findall(r'forbidden: User "[^"]+" cannot [^\n]*', log)
    assert not denials, "\n".join(denials[:5])


def test_watch_namespaces_confines_the_operator_to_them(
    helm: Helm, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """With watchNamespaces the token writes children only there; elsewhere it is refused."""
    core = client.CoreV1Api(cluster.api_client)
    watched, other = f"{namespace}-w", f"{namespace}-o"
    for name in (watched, other):
        core.create_namespace({"metadata": {"name": name}})
    release = "ns-" + uuid.uuid4().hex[:6]
    try:
        helm.with_values("install", release, str(CHART), "--namespace", namespace, kubeconfig=cluster.kubeconfig,
                         values={"watchNamespaces": [watched], "peering": {"enabled": True, "name": release}})
        sa = f"{release}-imagefleet"
        kubeconfig = service_account_kubeconfig(cluster.api_client, cluster.kubeconfig, namespace, sa,
                                                tmp_path / "sa.kubeconfig")

        def can(*args: str) -> bool:
            result = kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
            return result.stdout.strip() == "yes"

        assert can("create", "deployments.apps", "-n", watched)
        assert can("patch", f"kopfpeerings.kopf.dev/{release}", "-n", watched)
        assert can("list", "nodes")
        assert not can("create", "deployments.apps", "-n", other)
        assert not can("watch", "imagemodeldeployments.imagefleet.io", "-n", other)
        assert can("list", "pods", "--all-namespaces")  # GPUs requested by anyone's pods
        assert not can("create", "pods", "-n", watched)
        assert not can("patch", f"clusterkopfpeerings.kopf.dev/{release}")
    finally:
        helm.run("uninstall", release, "--namespace", namespace, kubeconfig=cluster.kubeconfig, check=False)
        for name in (watched, other):
            core.delete_namespace(name)
