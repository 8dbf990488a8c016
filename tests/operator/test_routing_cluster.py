"""RoutingValid and the InferencePool against the real local control plane.

The InferencePool CRD is the Gateway API Inference Extension's own (v1.6.0, unchanged), vendored
in third_party/ with its license. Without it the test fails naming the file: it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest
import yaml
from kopf._cogs.clients import auth
from kopf._cogs.structs import credentials
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import imagefleet.handlers  # noqa: F401 - registers the operator's handlers in kopf's default registry
from imagefleet.handlers.discovery import Insights, watch_when_served, watched
from tests.conftest import Cluster
from tests.helpers import wait_until

from .conftest import OperatorFactory
from .harness import ROOT, Imds

TINY = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"}
POOL_CRD_FILE = (
    ROOT / "third_party" / "gateway-api-inference-extension-v1.6.0" / "inference.networking.k8s.io_inferencepools.yaml"
)
POOL_CRD = "inferencepools.inference.networking.k8s.io"
POOL = ("inference.networking.k8s.io", "v1", "inferencepools")


def _condition(imds: Imds, name: str, type_: str) -> tuple[str, str, str] | None:
    found = imds.condition(name, type_)
    return None if found is None else (found["status"], found["reason"], found["message"])


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [event.reason for event in events if event.involved_object.kind == "ImageModelDeployment"]


def test_overflow_targets_are_judged_on_apply_and_again_when_the_namespace_changes(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory
) -> None:
    operator_factory(namespace, env={"IMAGEFLEET_RESYNC_SECONDS": "3600"})  # only events can re-judge a
    imds = Imds(cluster.api_client, namespace)
    imds.create("a", {**TINY, "routing": {"group": "sdxl", "overflowTo": "b"}})

    def reason(name: str) -> str | None:
        condition = _condition(imds, name, "RoutingValid")
        return None if condition is None else f"{condition[0]}/{condition[1]}"

    wait_until(lambda: reason("a") == "False/OverflowTargetNotFound", timeout=30, message="a: target not found")
    (_, _, message) = _condition(imds, "a", "RoutingValid") or ("", "", "")
    assert message == f"spec.routing.overflowTo: ImageModelDeployment 'b' does not exist in namespace {namespace}"
    # Ready follows a's own pods: the bad target does not take it out of service.
    imds.wait_ready("a", timeout=90)

    imds.create("b", {**TINY, "routing": {"group": "other"}})  # a appears: another group
    wait_until(lambda: reason("a") == "False/OverflowTargetInOtherGroup", timeout=10, message="a: other group")

    imds.patch_spec("b", {"routing": {"group": "sdxl", "overflowTo": "a"}})  # a -> b -> a
    wait_until(lambda: reason("a") == reason("b") == "False/OverflowCycle", timeout=10, message="a, b: a cycle")
    assert "(a -> b -> a)" in (_condition(imds, "a", "RoutingValid") or ("", "", ""))[2]

    imds.patch_spec("b", {"routing": {"overflowTo": None}})  # b ends the chain
    wait_until(lambda: reason("a") == "True/OverflowTargetValid" and reason("b") is None, timeout=10,
               message="a valid again, b without RoutingValid")
    assert imds.is_ready("a")
    wait_until(lambda: {"OverflowTargetNotFound", "OverflowTargetInOtherGroup", "OverflowCycle",
                        "OverflowTargetValid"} <= set(_event_reasons(cluster, namespace, "a")),
               timeout=15, message="one Event per change of a's verdict")

    imds.delete("b")  # the target goes away
    wait_until(lambda: reason("a") == "False/OverflowTargetNotFound", timeout=10, message="a: target gone")


@pytest.fixture
def no_pool_crd(cluster: Cluster) -> Iterator[client.ApiextensionsV1Api]:
    """The InferencePool CRD absent at the start and removed again at the end (other tests run without it)."""
    if not POOL_CRD_FILE.is_file():
        pytest.fail(f"the Gateway API Inference Extension CRD is missing: {POOL_CRD_FILE} (see third_party/README.md)")
    extensions = client.ApiextensionsV1Api(cluster.api_client)
    _delete_crd(extensions)
    yield extensions
    _delete_crd(extensions)


def _crd_gone(extensions: client.ApiextensionsV1Api) -> bool:
    try:
        extensions.read_custom_resource_definition(POOL_CRD)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _delete_crd(extensions: client.ApiextensionsV1Api) -> None:
    try:
        extensions.delete_custom_resource_definition(POOL_CRD)
    except ApiException as error:
        if error.status != 404:
            raise
    wait_until(lambda: _crd_gone(extensions), timeout=60, message=f"CRD {POOL_CRD} to be deleted")


def _install_crd(extensions: client.ApiextensionsV1Api) -> None:
    manifest = yaml.safe_load(POOL_CRD_FILE.read_text())
    extensions.create_custom_resource_definition(manifest)

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(POOL_CRD).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout=30, message=f"CRD {POOL_CRD} to be Established")


def _pool(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(  # type: ignore[no-any-return]
            *POOL[:2], namespace, POOL[2], name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_inference_pool_follows_its_crd_and_its_resource(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory, no_pool_crd: client.ApiextensionsV1Api
) -> None:
    operator_factory(namespace, env={"IMAGEFLEET_ENDPOINT_PICKER_SERVICE": "{name}-epp",
                                     "IMAGEFLEET_ENDPOINT_PICKER_PORT": "9002",
                                     "IMAGEFLEET_RESYNC_SECONDS": "3600"})  # only events drive the flips
    imds = Imds(cluster.api_client, namespace)
    imd = imds.create("sdxl-bulk", {**TINY, "tier": "bulk", "routing": {"inferencePool": {"enabled": True}}})
    imds.create("plain", TINY)

    def pool_reason() -> str | None:
        condition = _condition(imds, "sdxl-bulk", "InferencePoolReady")
        return None if condition is None else f"{condition[0]}/{condition[1]}"

    wait_until(lambda: pool_reason() == "False/CRDNotInstalled", timeout=30, message="InferencePoolReady=False")
    assert POOL_CRD in (_condition(imds, "sdxl-bulk", "InferencePoolReady") or ("", "", ""))[2]

    _install_crd(no_pool_crd)
    pool = wait_until(lambda: _pool(cluster, namespace, "sdxl-bulk"), timeout=15, message="the InferencePool")
    wait_until(lambda: pool_reason() == "True/PoolConfigured", timeout=15, message="InferencePoolReady=True")
    # Owned by its resource; selects exactly the runtime pods; the API server's own defaults are there,
    # so the real v1.6.0 schema took it.
    (owner,) = pool["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ImageModelDeployment", imd["metadata"]["uid"], True)
    deployment = client.AppsV1Api(cluster.api_client).read_namespaced_deployment("sdxl-bulk", namespace)
    assert pool["spec"]["selector"]["matchLabels"] == deployment.spec.selector.match_labels
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {"name": "sdxl-bulk-epp", "port": {"number": 9002}, "group": "",
                                                 "kind": "Service", "failureMode": "FailClose"}
    assert pool["spec"]["appProtocol"] == "http"
    assert _pool(cluster, namespace, "plain") is None and _condition(imds, "plain", "InferencePoolReady") is None

    # Drift is restored.
    custom = client.CustomObjectsApi(cluster.api_client)
    custom.patch_namespaced_custom_object(*POOL[:2], namespace, POOL[2], "sdxl-bulk",
                                          {"spec": {"targetPorts": [{"number": 9999}]}},
                                          _content_type="application/merge-patch+json")
    wait_until(lambda: (_pool(cluster, namespace, "sdxl-bulk") or {}).get("spec", {}).get("targetPorts")
               == [{"number": 8000}], timeout=15, message="the pool's targetPorts restored")

    # The CRD goes (taking the pool with it) and comes back.
    _delete_crd(no_pool_crd)
    wait_until(lambda: pool_reason() == "False/CRDNotInstalled", timeout=15, message="back to CRDNotInstalled")
    _install_crd(no_pool_crd)
    wait_until(lambda: _pool(cluster, namespace, "sdxl-bulk"), timeout=15, message="the pool recreated")
    wait_until(lambda: pool_reason() == "True/PoolConfigured", timeout=15, message="InferencePoolReady=True again")
    assert {"CRDNotInstalled", "InferencePoolReady"} <= set(_event_reasons(cluster, namespace, "sdxl-bulk"))

    # Turned off: the pool is deleted and the condition removed.
    imds.patch_spec("sdxl-bulk", {"routing": {"inferencePool": {"enabled": False}}})
    wait_until(lambda: _pool(cluster, namespace, "sdxl-bulk") is None and pool_reason() is None, timeout=30,
               message="the pool deleted and the condition gone")
    imds.patch_spec("sdxl-bulk", {"routing": {"inferencePool": {"enabled": True}}})
    wait_until(lambda: _pool(cluster, namespace, "sdxl-bulk"), timeout=30, message="the pool again")

    # The resource goes: the garbage collector takes its pool.
    imds.delete("sdxl-bulk")
    wait_until(lambda: _pool(cluster, namespace, "sdxl-bulk") is None, timeout=60,
               message="the pool garbage-collected with its resource")



async def test_kopfs_discovery_step_brings_in_the_pools_kopf_missed(
    cluster: Cluster, no_pool_crd: client.ApiextensionsV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state the race leaves (see handlers.discovery): the CRD is Established and served, but kopf read
    discovery too early and watches nothing of its group. The operator's rescan, kopf's own step, fixes it."""
    _install_crd(no_pool_crd)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    settings = kopf.OperatorSettings()
    vault = credentials.Vault()
    await vault.populate({"kubeconfig": kopf.login_with_kubeconfig(settings=settings)})
    auth.vault_var.set(vault)
    insights = Insights()
    crd = no_pool_crd.api_client.sanitize_for_serialization(no_pool_crd.read_custom_resource_definition(POOL_CRD))
    assert not watched(insights, POOL[0], POOL[2])

    try:
        rescans = await watch_when_served(crd, kopf.Memo(kopf_insights=insights, kopf_settings=settings))
    finally:
        await vault.close()

    # At least one: discovery may serve the pools a few ms after Established, and then a second read is needed.
    assert rescans is not None and rescans >= 1
    assert watched(insights, POOL[0], POOL[2])
    # Indexed too: kopf lists the pools into the operator's index before it watches them.
    assert any(resource.plural == POOL[2] and resource.version == POOL[1] for resource in insights.indexed_resources)
