"""The chart rendered with `helm template`: lint, pod security, RBAC shape, catalog, CRDs, images."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm import CHART, ROOT, Helm, by_kind, one

FORBIDDEN_RESOURCES = {"configmaps", "serviceaccounts", "serviceaccounts/token", "roles", "rolebindings",
                       "clusterroles", "clusterrolebindings", "pods/exec", "nodes/proxy"}


def rules_of(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for role in by_kind(documents, "ClusterRole") + by_kind(documents, "Role") for rule in role["rules"]]


def verbs_for(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"] and "resourceNames" not in rule
        for verb in rule["verbs"]
    }


def runtimes_monitor(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The ServiceMonitor of the runtime pods (the other one scrapes the operator)."""
    (monitor,) = [doc for doc in by_kind(documents, "ServiceMonitor") if doc["metadata"]["name"].endswith("-runtimes")]
    return monitor


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a", "team-b"]}, {"replicaCount": 2}])
def test_helm_lint_passes(helm: Helm, values: dict[str, Any]) -> None:
    result = helm.with_values("lint", "--strict", str(CHART), values=values)
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_operator_pod_is_restricted(helm: Helm) -> None:
    deployment = one(helm.template(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(arg.startswith("--liveness=http://0.0.0.0:8080/healthz") for arg in container["args"])
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/etc/imagefleet", "/tmp"}


def test_helm_carries_its_release_version(helm: Helm) -> None:
    """Built with helm's release ldflags: its own version, and Kubernetes 1.37 as the default (not 1.20)."""
    assert helm.run("version", "--template", "{{.Version}}").stdout == "v3.22.0"
    rendered = helm.run("template", "imagefleet", str(CHART), "--show-only", "templates/deployment.yaml").stdout
    assert "kind: Deployment" in rendered


def test_operator_environment_follows_the_settings_contract(helm: Helm) -> None:
    values = {"prometheus": {"url": "http://prom.monitoring:9090"}, "watchNamespaces": ["a", "b"],
              "runtimeImage": {"repository": "registry.local/rt", "tag": "1.2.3"}}
    container = one(helm.template(values=values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {
        "IMAGEFLEET_PROMETHEUS_URL": "http://prom.monitoring:9090",
        "IMAGEFLEET_GPU_CLASSES_FILE": "/etc/imagefleet/gpu-classes.yaml",
        "IMAGEFLEET_RUNTIME_IMAGE": "registry.local/rt:1.2.3",
        "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": "15",
        "IMAGEFLEET_NAMESPACES": "a,b",
        "IMAGEFLEET_PEERING": "imagefleet",
        "IMAGEFLEET_METRICS_PORT": "8081",
        "IMAGEFLEET_ENDPOINT_PICKER_SERVICE": "{name}-epp",
        "IMAGEFLEET_ENDPOINT_PICKER_PORT": "9002",
    }


def test_default_images_follow_the_chart_app_version_and_the_dockerfiles(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    documents = helm.template()
    container = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    runtime_image = {item["name"]: item["value"] for item in container["env"]}["IMAGEFLEET_RUNTIME_IMAGE"]
    for image, dockerfile in ((container["image"], "Dockerfile.operator"), (runtime_image, "Dockerfile.runtime")):
        assert image.endswith(":" + chart["appVersion"])
        assert f"-t {image} ." in (ROOT / "docker" / dockerfile).read_text(), f"{dockerfile} builds {image}"


def test_cluster_wide_rbac_is_least_privilege(helm: Helm) -> None:
    documents = helm.template()
    assert not by_kind(documents, "Role")
    rules = rules_of(documents)
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not FORBIDDEN_RESOURCES & set(rule["resources"]), rule
    assert verbs_for(rules, "imagefleet.io", "imagemodeldeployments") == {"get", "list", "watch", "patch"}
    assert verbs_for(rules, "imagefleet.io", "imagemodeldeployments/status") == {"patch"}
    assert verbs_for(rules, "", "pods") == {"list", "watch"}  # the autoscaler's GPU index
    assert verbs_for(rules, "", "nodes") == {"list", "watch"}
    assert verbs_for(rules, "", "events") == {"create", "patch"}
    crud = {"create", "get", "list", "watch", "patch", "delete"}  # server-side apply: no PUT
    assert verbs_for(rules, "apps", "deployments") == crud
    assert verbs_for(rules, "", "services") == crud
    # Every child is read (get) only when an apply finds an object of its name it did not make (NameConflict).
    assert verbs_for(rules, "inference.networking.k8s.io", "inferencepools") == crud
    assert verbs_for(rules, "policy", "poddisruptionbudgets") == crud
    assert verbs_for(rules, "networking.k8s.io", "networkpolicies") == crud
    # The model cache: its claim and Job, and a GET of the token Secret a resource names (no list, no watch).
    assert verbs_for(rules, "", "persistentvolumeclaims") == {"create", "list", "watch", "patch"}
    assert verbs_for(rules, "batch", "jobs") == crud - {"get"}
    assert verbs_for(rules, "", "secrets") == {"get"}
    # Writing to the peering object is narrowed to the chart's own.
    (named,) = [rule for rule in rules if "resourceNames" in rule]
    assert named["resources"] == ["clusterkopfpeerings"] and named["resourceNames"] == ["imagefleet"]
    binding = one(documents, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == one(documents, "ServiceAccount")["metadata"]["name"]


def test_namespaced_rbac_grants_workloads_only_in_watched_namespaces(helm: Helm) -> None:
    documents = helm.template(values={"watchNamespaces": ["team-a", "team-b"]})
    roles = by_kind(documents, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(documents, "RoleBinding")) == ["team-a", "team-b"]
    cluster_resources = {r for rule in one(documents, "ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources == {"nodes", "pods", "customresourcedefinitions", "namespaces"}
    role_rules = roles[0]["rules"]
    assert verbs_for(role_rules, "apps", "deployments")
    assert [rule["resources"] for rule in role_rules if "resourceNames" in rule] == [["kopfpeerings"]]
    peerings = by_kind(documents, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not by_kind(documents, "ClusterKopfPeering")


def test_without_peering_there_is_one_replica_and_no_overlap(helm: Helm) -> None:
    documents = helm.template(values={"peering": {"enabled": False, "name": "imagefleet"}})
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = {item["name"]: item["value"] for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "IMAGEFLEET_PEERING" not in env
    assert not by_kind(documents, "ClusterKopfPeering")
    assert not [rule for rule in rules_of(documents) if "kopf.dev" in rule["apiGroups"]]


def test_optional_pdb_and_servicemonitor(helm: Helm) -> None:
    assert not by_kind(helm.template(), "PodDisruptionBudget")
    assert not by_kind(helm.template(), "ServiceMonitor")
    documents = helm.template(values={
        "replicaCount": 2,
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    })
    pdb = one(documents, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == one(documents, "Deployment")["spec"]["selector"]["matchLabels"]
    monitor = runtimes_monitor(documents)
    assert monitor["spec"]["podTargetLabels"] == ["imagefleet.io/name"]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_servicemonitor_selects_the_services_the_operator_builds(helm: Helm) -> None:
    from imagefleet.builders.labels import Owner
    from imagefleet.builders.service import build_service

    monitor = runtimes_monitor(helm.template(values={"serviceMonitor": {"enabled": True}}))
    service = build_service(Owner(name="sdxl-premium", namespace="team-a", uid="0"), "premium")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    # podTargetLabels copies a label of the pods the Service selects.
    assert "imagefleet.io/name" in service["spec"]["selector"]


def test_crds_come_from_the_repository_crds_folder(helm: Helm, tmp_path: Path) -> None:
    """The chart's CRDs are the generated ones in crds/, also inside the packaged chart."""
    generated = ("imagemodeldeployment.yaml", "imagemodelpool.yaml")
    for name in generated:
        link = CHART / "crds" / name
        assert link.is_symlink() and link.resolve() == (ROOT / "crds" / name).resolve()
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("imagefleet-*.tgz")
    with tarfile.open(package) as archive:
        for name in generated:
            member = archive.extractfile(f"imagefleet/crds/{name}")
            assert member is not None
            assert member.read() == (ROOT / "crds" / name).read_bytes()
    shown = [doc for doc in yaml.safe_load_all(helm.run("show", "crds", str(CHART)).stdout) if doc]
    assert {doc["metadata"]["name"] for doc in shown} == {
        "imagemodeldeployments.imagefleet.io", "imagemodelpools.imagefleet.io", "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


def test_operator_reads_the_rendered_settings_and_catalog(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's own settings loader accepts the chart's env and ConfigMap as rendered."""
    from imagefleet.catalog import load_gpu_classes
    from imagefleet.config import OperatorSettings

    documents = helm.template(values={"watchNamespaces": ["a"]})
    catalog = tmp_path / "gpu-classes.yaml"
    catalog.write_text(one(documents, "ConfigMap")["data"]["gpu-classes.yaml"])
    container = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    fields = {"IMAGEFLEET_" + name.upper() for name in OperatorSettings.model_fields}
    for item in container["env"]:
        assert item["name"] in fields, f"{item['name']} is not an operator setting"
        monkeypatch.setenv(item["name"], item["value"])
    monkeypatch.setenv("IMAGEFLEET_GPU_CLASSES_FILE", str(catalog))
    settings = OperatorSettings()
    assert settings.gpu_classes == load_gpu_classes()  # the chart's defaults are the built-in catalog
    assert settings.namespace_list == ["a"]
    assert settings.peering == "imagefleet"


def test_values_schema_describes_exactly_the_gpu_class_fields() -> None:
    from imagefleet.catalog import GPUClass

    schema = json.loads((CHART / "values.schema.json").read_text())
    described = set(schema["definitions"]["gpuClass"]["properties"])
    aliases = {field.alias or name for name, field in GPUClass.model_fields.items()} - {"name"}
    assert described == aliases
    required = {field.alias or name for name, field in GPUClass.model_fields.items() if field.is_required()}
    assert set(schema["definitions"]["gpuClass"]["required"]) == required - {"name"}
