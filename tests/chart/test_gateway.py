"""The chart's gateway: rendered objects, values schema, and its ServiceAccount's rights on a real API server."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from imagefleet.gateway.auth import parse_keys
from tests.conftest import Cluster
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once

from .credentials import service_account_kubeconfig
from .helm import CHART, Helm, by_kind, kubectl, one

KEY_HASH = hashlib.sha256(b"team-a-key").hexdigest()
ENABLED: dict[str, Any] = {"gateway": {"enabled": True, "apiKeys": {"keys": [
    {"name": "team-a", "sha256": KEY_HASH, "groups": ["team-a/sdxl"], "tiers": ["bulk"], "maxQueued": 5,
     "maxInFlight": 10}]}}}


def gateway_docs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"]


def test_gateway_is_off_by_default(helm: Helm) -> None:
    assert gateway_docs(helm.template()) == []


def test_helm_lint_passes_with_the_gateway(helm: Helm) -> None:
    result = helm.with_values("lint", "--strict", str(CHART), values=ENABLED)
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_gateway_deployment_service_and_keys_secret(helm: Helm) -> None:
    documents = gateway_docs(helm.template(values=ENABLED))
    assert sorted(d["kind"] for d in documents) == sorted(
        ["ServiceAccount", "Deployment", "Service", "Secret", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy",
         "PodDisruptionBudget", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"])
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["gateway"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["IMAGEFLEET_GATEWAY_API_KEYS"] == "/etc/imagefleet-gateway/keys.yaml"
    assert (env["IMAGEFLEET_GATEWAY_MAX_CONNECTIONS"], env["IMAGEFLEET_GATEWAY_MAX_IN_FLIGHT"],
            env["IMAGEFLEET_GATEWAY_MAX_IN_FLIGHT_PER_KEY"], env["IMAGEFLEET_GATEWAY_IDEMPOTENCY_WINDOW"]) == \
        ("4096", "2000", "200", "600")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9102} and env["IMAGEFLEET_GATEWAY_METRICS_PORT"] == "9102"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9102"
    # Out of the endpoints before it stops listening; time to answer a request held, then generated, in full.
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert pod["terminationGracePeriodSeconds"] == 10 + 180 + 600
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert one(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    single = gateway_docs(helm.template(values={"gateway": {**ENABLED["gateway"], "replicas": 1}}))
    assert by_kind(single, "PodDisruptionBudget") == []  # a budget of one replica would block every drain
    service = one(documents, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    secret = one(documents, "Secret")
    [key] = parse_keys(secret["stringData"]["keys.yaml"])  # the gateway's own reading of the file
    assert (key.name, key.sha256, key.groups, key.tiers, key.max_queued, key.max_in_flight) == (
        "team-a", KEY_HASH, {"team-a/sdxl"}, {"bulk"}, 5, 10)
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_existing_secret_and_keys_off(helm: Helm) -> None:
    own = gateway_docs(helm.template(values={"gateway": {"enabled": True, "apiKeys": {"existingSecret": "mine"}}}))
    assert by_kind(own, "Secret") == []
    pod = one(own, "Deployment")["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "api-keys")["secret"]["secretName"] == "mine"
    open_door = gateway_docs(helm.template(values={"gateway": {"enabled": True, "apiKeys": {"enabled": False}}}))
    container = one(open_door, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "IMAGEFLEET_GATEWAY_API_KEYS" not in {item["name"] for item in container["env"]}
    assert by_kind(open_door, "Secret") == []


def test_gateway_rbac_is_least_privilege(helm: Helm) -> None:
    role = one(gateway_docs(helm.template(values=ENABLED)), "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["imagefleet.io"], "resources": ["imagemodeldeployments"],
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    scoped = gateway_docs(helm.template(values={**ENABLED, "watchNamespaces": ["team-a", "team-b"]}))
    assert by_kind(scoped, "ClusterRole") == []
    assert sorted(r["metadata"]["namespace"] for r in by_kind(scoped, "Role")) == ["team-a", "team-b"]
    env = {e["name"]: e["value"] for e in one(scoped, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IMAGEFLEET_GATEWAY_NAMESPACES"] == "team-a,team-b"


def test_network_policies_admit_only_the_gateway_and_prometheus(helm: Helm) -> None:
    """The runtime pods' policies are the operator's, one per resource (tests/security runs them); the
    chart gives it the peers, and covers the gateway's own pods."""
    documents = helm.template("--namespace", "imagefleet-system", values={**ENABLED, "watchNamespaces": ["team-a"]})
    operator = next(d for d in by_kind(documents, "Deployment") if d not in gateway_docs(documents))
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    gateway_pods = one(gateway_docs(documents), "Deployment")["spec"]["template"]["metadata"]["labels"]
    [from_gateway] = json.loads(env["IMAGEFLEET_RUNTIME_INGRESS_FROM"])
    [from_prometheus] = json.loads(env["IMAGEFLEET_RUNTIME_METRICS_FROM"])
    assert from_gateway["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "imagefleet-system"}
    assert from_gateway["podSelector"]["matchLabels"].items() <= gateway_pods.items()
    assert from_prometheus == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    policy = one(gateway_docs(documents), "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "imagefleet-system"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= gateway_pods.items()
    clients, scrapes = policy["spec"]["ingress"]
    assert clients == {"ports": [{"port": "http", "protocol": "TCP"}]}
    assert scrapes == {"from": [from_prometheus], "ports": [{"port": "metrics", "protocol": "TCP"}]}
    off = helm.template(values={"gateway": {"enabled": True, "networkPolicy": {"enabled": False}}})
    assert by_kind(off, "NetworkPolicy") == []
    operator = next(d for d in by_kind(off, "Deployment") if d not in gateway_docs(off))
    names = {e["name"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"IMAGEFLEET_RUNTIME_INGRESS_FROM", "IMAGEFLEET_RUNTIME_METRICS_FROM"}


BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("a plaintext key instead of its hash",
     {"gateway": {"enabled": True, "apiKeys": {"keys": [{"name": "a", "sha256": "my-secret-key"}]}}},
     ["/gateway/apiKeys/keys/0/sha256", "pattern"]),
    ("an unknown tier", {"gateway": {"enabled": True, "apiKeys": {"keys": [
        {"name": "a", "sha256": KEY_HASH, "tiers": ["gold"]}]}}}, ["/gateway/apiKeys/keys/0/tiers/0"]),
    ("zero replicas", {"gateway": {"enabled": True, "replicas": 0}}, ["/gateway/replicas", "minimum"]),
    ("a misspelled key", {"gateway": {"enabled": True, "replica": 2}}, ["additional properties 'replica' not allowed"]),
    ("more held requests than its memory holds", {"gateway": {"enabled": True, "maxHeld": 100000}},
     ["/gateway/maxHeld", "maximum"]),
    ("a key's burst of zero", {"gateway": {"enabled": True, "apiKeys": {"keys": [
        {"name": "a", "sha256": KEY_HASH, "rate": 1, "burst": 0}]}}}, ["/gateway/apiKeys/keys/0/burst", "minimum"]),
    ("no bound on requests in flight", {"gateway": {"enabled": True, "maxInFlight": 0}},
     ["/gateway/maxInFlight", "minimum"]),
    ("a key's share of the queue of zero", {"gateway": {"enabled": True, "apiKeys": {"keys": [
        {"name": "a", "sha256": KEY_HASH, "maxQueued": 0}]}}}, ["/gateway/apiKeys/keys/0/maxQueued", "minimum"]),
]


@pytest.mark.parametrize(("values", "fragments"), [case[1:] for case in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_gateway_values_are_refused_naming_the_key(helm: Helm, values: dict[str, Any], fragments: list[str]) -> None:
    result = helm.with_values("template", "imagefleet", str(CHART), values=values, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def gateway_kubeconfig(helm: Helm, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The chart installed with the gateway; a kubeconfig with the gateway ServiceAccount's token."""
    core = client.CoreV1Api(cluster.api_client)
    suffix = uuid.uuid4().hex[:5]
    release, system = f"gw-{suffix}", f"gateway-{suffix}"
    core.create_namespace({"metadata": {"name": system}})
    try:
        helm.with_values("install", release, str(CHART), "--namespace", system, kubeconfig=cluster.kubeconfig,
                         values={**ENABLED, "peering": {"enabled": True, "name": release}})
        yield service_account_kubeconfig(cluster.api_client, cluster.kubeconfig, system, f"{release}-imagefleet-gateway",
                                         tmp_path_factory.mktemp("gateway") / "gateway.kubeconfig")
    finally:
        helm.run("uninstall", release, "--namespace", system, kubeconfig=cluster.kubeconfig, check=False)
        core.delete_namespace(system)


ALLOWED = [("watch", "imagemodeldeployments.imagefleet.io"), ("patch", "imagemodeldeployments.imagefleet.io"),
           ("list", "endpointslices.discovery.k8s.io"), ("watch", "endpointslices.discovery.k8s.io")]
REFUSED = [("update", "imagemodeldeployments.imagefleet.io"), ("patch", "imagemodeldeployments.imagefleet.io:status"),
           ("create", "imagemodeldeployments.imagefleet.io"), ("delete", "imagemodeldeployments.imagefleet.io"),
           ("create", "endpointslices.discovery.k8s.io"), ("get", "secrets"), ("list", "pods"),
           ("patch", "deployments.apps"), ("list", "services")]


@pytest.mark.parametrize(("verb", "resource"), ALLOWED + REFUSED)
def test_gateway_service_account_rights(gateway_kubeconfig: Path, verb: str, resource: str) -> None:
    kind, _, subresource = resource.partition(":")  # kubectl reads "kind/name": a subresource is a flag
    extra = ["--subresource", subresource] if subresource else []
    result = kubectl("auth", "can-i", verb, kind, *extra, "--namespace", "default", kubeconfig=gateway_kubeconfig,
                     check=False)
    assert result.stdout.strip() == ("yes" if (verb, resource) in ALLOWED else "no"), result.stdout + result.stderr


async def test_the_gateway_runs_with_only_its_chart_rights(
    cluster: Cluster, gateway_kubeconfig: Path, imd_crd: None, namespace: str
) -> None:
    """With the chart ServiceAccount's token: the watches list and watch cluster-wide, and the demand
    annotation is written; a 403 anywhere fails the test."""
    import asyncio

    from kubernetes import config

    from imagefleet import GROUP, PLURAL, VERSION
    from imagefleet.gateway.fleet import Resource
    from imagefleet.gateway.service import Gateway, Settings
    from imagefleet.gateway.watch import DEMAND_ANNOTATION, FleetWatch, demand_signaller
    from imagefleet.kube import Kube

    admin = client.CustomObjectsApi(cluster.api_client)
    admin.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": "cold"},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu"}})
    kube = Kube(config.new_client_from_config(config_file=str(gateway_kubeconfig)))
    gateway = Gateway(Settings())  # not started: nothing is sent to any pod
    watch = FleetWatch(gateway, kube)
    await watch.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not (watch.synced and (namespace, "cold") in gateway.fleet.resources):
            assert asyncio.get_running_loop().time() < deadline, "the watches did not sync with the chart's rights"
            await asyncio.sleep(0.05)
        resource: Resource = gateway.fleet.resources[(namespace, "cold")]
        await demand_signaller(kube)(resource)
    finally:
        await watch.stop()
        kube.close()
    obj = admin.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cold")
    assert DEMAND_ANNOTATION in obj["metadata"]["annotations"]


def test_chart_environment_names_are_the_commands_variables(helm: Helm) -> None:
    from imagefleet.gateway.command import gateway

    known = {param.envvar for param in gateway.params if isinstance(param.envvar, str)}
    container = one(gateway_docs(helm.template(values=ENABLED)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {item["name"] for item in container["env"]} <= known


def test_a_load_balancer_gets_the_annotations_that_terminate_tls(helm: Helm) -> None:
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:aws:acm:region:1:certificate/x"}
    values = {"gateway": {**ENABLED["gateway"], "service": {"type": "LoadBalancer", "port": 443,
                                                            "annotations": annotations}}}
    service = one(gateway_docs(helm.template(values=values)), "Service")
    assert service["metadata"]["annotations"] == annotations and service["spec"]["type"] == "LoadBalancer"
    assert "annotations" not in one(gateway_docs(helm.template(values=ENABLED)), "Service")["metadata"]
