"""ImageModelPool and its members at apply time, on the real API server: the CRDs' CEL rules, and the chart's
ValidatingAdmissionPolicy that checks a member against the pools of its namespace (naming both families)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, POOL_PLURAL, VERSION
from imagefleet.poolbudget import checkpoint_mib
from imagefleet.catalog import model_catalog
from tests.chart.conftest import helm  # noqa: F401 - the helm binary
from tests.chart.helm import Helm
from tests.conftest import Cluster
from tests.helpers import wait_until

from .harness import Imds


def _pool(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelPool", "metadata": {"name": name}, "spec": spec}


def _create_pool(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api_client)
    return api.create_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, POOL_PLURAL, _pool(name, spec))


def _refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)["message"]


@pytest.fixture(scope="module")
def pool_admission(cluster: Cluster, imd_crd: None, helm: Helm) -> Iterator[None]:
    """The chart's pool-member policy and binding, applied as the chart renders them; removed afterwards."""
    documents = [doc for doc in yaml.safe_load_all(helm.render("--show-only", "templates/pool-admission.yaml"))
                 if doc]
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    policy = next(doc for doc in documents if doc["kind"] == "ValidatingAdmissionPolicy")
    binding = next(doc for doc in documents if doc["kind"] == "ValidatingAdmissionPolicyBinding")
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    yield
    admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
    admission.delete_validating_admission_policy(policy["metadata"]["name"])


def wait_until_in_force(cluster: Cluster, namespace: str, wrong: dict[str, Any]) -> None:
    """Wait until the policy refuses `wrong` (a member of another family): the API server has loaded the
    policy and its params (a dry run changes nothing)."""

    def refused_now() -> bool:
        try:
            client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "imagemodeldeployments",
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
                 "metadata": {"name": "probe"}, "spec": wrong}, dry_run="All")
        except ApiException as error:
            return error.status in (403, 422)
        return False

    wait_until(refused_now, timeout=30, interval=0.2, message="the pool admission policy to be in force")


def test_a_budget_below_one_checkpoint_is_refused_with_both_figures(
    cluster: Cluster, imd_crd: None, namespace: str
) -> None:
    needed = checkpoint_mib(model_catalog()["sdxl"], "fp16")
    status, message = _refusal(lambda: _create_pool(cluster, namespace, "small", {
        "family": "sdxl", "gpuClass": "l4-24gb", "memory": {"gpuMiB": 4096}}))
    assert status == 422 and "spec.memory.gpuMiB" in message, message
    assert "4096 MiB" in message and f"{needed} MiB at fp16" in message and "sdxl" in message, message
    fits = _create_pool(cluster, namespace, "fits", {"family": "sdxl", "gpuClass": "l4-24gb",
                                                      "memory": {"gpuMiB": needed}})
    assert fits["spec"]["autoscaling"] == {"enabled": False, "minReplicas": 1, "maxReplicas": 4,
                                           "scaleDownStabilizationSeconds": 300}


def test_pool_names_families_and_ranges_are_checked(cluster: Cluster, imd_crd: None, namespace: str) -> None:
    status, message = _refusal(lambda: _create_pool(cluster, namespace, "p" * 59, {"family": "tiny",
                                                                                    "gpuClass": "cpu"}))
    assert status == 422 and "metadata.name" in message and "58" in message, message
    status, message = _refusal(lambda: _create_pool(cluster, namespace, "dalle", {"family": "dalle",
                                                                                  "gpuClass": "cpu"}))
    assert status == 422 and "spec.family" in message and "sdxl" in message, message
    status, message = _refusal(lambda: _create_pool(cluster, namespace, "range", {
        "family": "tiny", "gpuClass": "cpu", "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}))
    assert status == 422 and "spec.autoscaling.minReplicas" in message and "maxReplicas" in message, message
    _create_pool(cluster, namespace, "zero", {"family": "tiny", "gpuClass": "cpu",
                                              "autoscaling": {"enabled": True, "minReplicas": 0}})
    api = client.CustomObjectsApi(cluster.api_client)
    status, message = _refusal(lambda: api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, POOL_PLURAL, "zero", {"spec": {"family": "sd15"}},
        _content_type="application/merge-patch+json"))
    assert status == 422 and "spec.family" in message and "immutable" in message, message


@pytest.mark.parametrize(("case", "spec", "field", "hint"), [
    ("adapter-without-pool", {"model": {"name": "tiny", "adapter": {"name": "org/lora"}}},
     "spec.model.adapter", "spec.pool"),
    ("repo-member-without-family", {"model": {"name": "org/finetune"}, "pool": "p"}, "spec.model.family", "pool"),
    ("member-with-cache", {"model": {"name": "sd15", "cache": {"size": "8Gi"}}, "pool": "p"}, "spec.pool",
     "model.cache"),
    ("adapter-path-escapes", {"model": {"name": "tiny", "adapter": {"name": "../x"}}, "pool": "p"},
     "spec.model.adapter.name", "'..'"),
    ("adapter-scale-negative", {"model": {"name": "tiny", "adapter": {"name": "org/lora", "scale": -1}}, "pool": "p"},
     "spec.model.adapter.scale", "greater than or equal to 0"),
])
def test_member_fields_are_checked_naming_the_field(
    cluster: Cluster, imd_crd: None, namespace: str, case: str, spec: dict[str, Any], field: str, hint: str
) -> None:
    status, message = _refusal(lambda: Imds(cluster.api_client, namespace).create(case, {"gpuClass": "cpu", **spec}))
    assert status == 422 and field in message and hint in message, message


def test_a_member_of_another_family_is_refused_naming_both_families(
    cluster: Cluster, pool_admission: None, namespace: str
) -> None:
    _create_pool(cluster, namespace, "sdxl-pool", {"family": "sdxl", "gpuClass": "h100-80gb"})
    _create_pool(cluster, namespace, "tiny-pool", {"family": "tiny", "gpuClass": "cpu"})
    imds = Imds(cluster.api_client, namespace)
    wrong = {"model": {"name": "sd15"}, "gpuClass": "h100-80gb", "pool": "sdxl-pool"}
    wait_until_in_force(cluster, namespace, wrong)
    status, message = _refusal(lambda: imds.create("sd15-in-sdxl", wrong))
    assert status in (403, 422), message
    assert "family sd15" in message and "family sdxl" in message and "sdxl-pool" in message, message
    status, message = _refusal(lambda: imds.create("pixel-art", {
        "model": {"name": "org/pixel-art-finetune", "family": "sd15", "adapter": {"name": "org/pixel-lora"}},
        "gpuClass": "h100-80gb", "pool": "sdxl-pool"}))
    assert "org/pixel-lora" in message and "family sd15" in message and "family sdxl" in message, message
    # Same family, in either pool of the namespace: accepted; so is a pool not (yet) there (PoolNotFound later).
    assert imds.create("finetune", {"model": {"name": "org/finetune", "family": "sdxl"}, "gpuClass": "h100-80gb",
                                    "pool": "sdxl-pool"})["spec"]["pool"] == "sdxl-pool"
    assert imds.create("tiny-lora", {"model": {"name": "tiny", "adapter": {"name": "loras/a", "scale": 0.5}},
                                     "gpuClass": "cpu", "pool": "tiny-pool"})["spec"]["model"]["adapter"]["scale"] == 0.5
    assert imds.create("later", {"model": {"name": "sd15"}, "gpuClass": "cpu", "pool": "not-yet"})
    # A change that moves a member to a pool of another family is refused too.
    status, message = _refusal(lambda: imds.patch_spec("tiny-lora", {"pool": "sdxl-pool"}))
    assert "family tiny" in message and "family sdxl" in message, message
