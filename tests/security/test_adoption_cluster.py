"""Finding 10: the operator never adopts an object it did not create.

Attack, on the real API server with the real operator: a tenant's own Service and Deployment exist
(no labels, no owner); an ImageModelDeployment of the same names appears. The old operator's forced
server-side apply took them over (selector, ports, template replaced, an owner reference added, so
garbage collection would delete them with the resource). Now each is left as it was and the
resource's Ready condition says NameConflict, naming it.
"""

from __future__ import annotations

from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import imagefleet_operator, imd_crd, operator_factory  # noqa: F401
from tests.operator.harness import Imds, OperatorProcess

SHOP = {"app": "shop"}


def test_a_foreign_deployment_and_service_of_the_same_name_are_refused_not_adopted(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    core, apps = client.CoreV1Api(cluster.api_client), client.AppsV1Api(cluster.api_client)
    core.create_namespaced_service(namespace, {"metadata": {"name": "shop"}, "spec": {
        "selector": SHOP, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}})
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "shop"}, "spec": {
        "replicas": 0, "selector": {"matchLabels": SHOP}, "template": {"metadata": {"labels": SHOP}, "spec": {
            "containers": [{"name": "web", "image": "registry.example/shop:1"}]}}}})
    imds = Imds(cluster.api_client, namespace)
    imds.create("shop", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 1})

    def conflict() -> bool:
        ready = imds.condition("shop", "Ready")
        return ready is not None and ready["reason"] == "NameConflict"

    wait_until(conflict, timeout=60, message="Ready=False NameConflict")
    message = imds.condition("shop", "Ready")["message"]  # type: ignore[index]
    # The first conflict found is named (the Deployment's); neither object is touched.
    assert "Deployment shop" in message and "never adopted" in message, message
    service = core.read_namespaced_service("shop", namespace)
    deployment = apps.read_namespaced_deployment("shop", namespace)
    for obj in (service, deployment):
        assert obj.metadata.owner_references is None and not obj.metadata.labels
    assert service.spec.selector == SHOP and [p.port for p in service.spec.ports] == [80]
    assert deployment.spec.template.spec.containers[0].image == "registry.example/shop:1"
