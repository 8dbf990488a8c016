"""spec.disruption, spec.topologySpread and a surge rollout against the real local control plane (KWOK
GPU nodes, the real scheduler and disruption controller): the budget appears, counts the resource's
pods, and goes away when the field is removed; the pods spread over the nodes; a rollout that needs
a spare GPU and finds none says so. The same budget for an ImageModelPool's pods."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, POOL_KIND, POOL_PLURAL, VERSION

from tests.conftest import Cluster
from tests.helpers import wait_until

from .harness import Imds, OperatorProcess

# Two nodes of 8 GPUs: without the spread both pods could share one.
SPREAD = {"model": {"name": "sd15"}, "gpuClass": "h100-80gb", "replicas": 2,
          "disruption": {"maxUnavailable": 1},
          "topologySpread": [{"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]}


def _budget(cluster: Cluster, namespace: str, name: str) -> client.V1PodDisruptionBudget | None:
    try:
        return client.PolicyV1Api(cluster.api_client).read_namespaced_pod_disruption_budget(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [(event.reason, event.message) for event in events if event.involved_object.kind == "ImageModelDeployment"]


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def test_budget_counts_the_pods_and_goes_with_the_field_and_the_pods_spread(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    imds = Imds(cluster.api_client, namespace)
    created = imds.create("spread", SPREAD)
    imds.wait_ready("spread", timeout=120)

    budget = wait_until(lambda: _budget(cluster, namespace, "spread"), timeout=30, message="the budget")
    assert budget.spec.max_unavailable == 1 and budget.spec.min_available is None
    (owner,) = budget.metadata.owner_references
    assert owner.uid == created["metadata"]["uid"] and owner.controller
    # The disruption controller counts the pods the budget selects: the resource's two, both healthy.
    wait_until(lambda: (s := _budget(cluster, namespace, "spread").status) is not None  # type: ignore[union-attr]
               and (s.expected_pods, s.current_healthy, s.disruptions_allowed) == (2, 2, 1),
               timeout=60, message="the budget to count 2 healthy pods, 1 disruption allowed")
    selector = ",".join(f"{k}={v}" for k, v in budget.spec.selector.match_labels.items())
    pods = client.CoreV1Api(cluster.api_client).list_namespaced_pod(namespace, label_selector=selector).items
    assert len(pods) == 2
    assert {pod.metadata.owner_references[0].kind for pod in pods} == {"ReplicaSet"}
    # One pod per node, as the constraint demands (the scheduler may also spread them unasked: the
    # constraint on the pods, below, is the evidence that the operator set it).
    assert len({pod.spec.node_name for pod in pods}) == 2, [pod.spec.node_name for pod in pods]
    constraint = pods[0].spec.topology_spread_constraints[0]
    assert (constraint.topology_key, constraint.max_skew, constraint.match_label_keys) == (
        "kubernetes.io/hostname", 1, ["pod-template-hash"])
    assert ("Created", "created PodDisruptionBudget spread over the runtime pods: maxUnavailable 1") in _events(
        cluster, namespace, "spread")

    # Someone edits the budget: the operator restores it.
    client.PolicyV1Api(cluster.api_client).patch_namespaced_pod_disruption_budget(
        "spread", namespace, {"spec": {"maxUnavailable": 0}})
    wait_until(lambda: _budget(cluster, namespace, "spread").spec.max_unavailable == 1,  # type: ignore[union-attr]
               timeout=30, message="the budget restored")

    imds.patch_spec("spread", {"disruption": None})  # a merge patch: null removes the field
    wait_until(lambda: _budget(cluster, namespace, "spread") is None, timeout=30, message="the budget deleted")
    assert ("Deleted", "deleted PodDisruptionBudget spread: spec.disruption was removed") in _events(
        cluster, namespace, "spread")
    assert imds.get("spread")["spec"].get("disruption") is None


def test_single_replica_rollout_with_surge_says_when_no_gpu_is_free_and_waits(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    """The L4 class has 2 nodes of 1 GPU: a filler takes one, the single replica the other. Its rollout
    (maxSurge 1, maxUnavailable 0) finds no GPU for the surge pod: a RolloutBlocked Warning, and the old
    pod keeps serving; once the filler goes, the rollout completes."""
    imds = Imds(cluster.api_client, namespace)
    imds.create("filler", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 1})
    imds.create("solo", {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 1,
                         "rollout": {"maxSurge": 1, "maxUnavailable": 0}})
    imds.wait_ready("filler", timeout=120)
    imds.wait_ready("solo", timeout=120)
    (old_pod,) = client.CoreV1Api(cluster.api_client).list_namespaced_pod(
        namespace, label_selector="imagefleet.io/name=solo").items

    imds.patch_spec("solo", {"generation": {"defaultSteps": 12}})  # a new pod template: a rollout
    blocked = wait_until(lambda: [message for reason, message in _events(cluster, namespace, "solo")
                                  if reason == "RolloutBlocked"], timeout=30, message="a RolloutBlocked Event")
    assert blocked[0].startswith("no free l4-24gb GPU for the surge pod (0 free, 1 needed); the rollout waits")

    def pods() -> list[client.V1Pod]:
        return list(client.CoreV1Api(cluster.api_client).list_namespaced_pod(
            namespace, label_selector="imagefleet.io/name=solo").items)

    wait_until(lambda: len(pods()) == 2, timeout=30, message="the surge pod")
    surge = next(pod for pod in pods() if pod.metadata.name != old_pod.metadata.name)
    assert surge.status.phase == "Pending" and not surge.spec.node_name
    assert any(pod.metadata.name == old_pod.metadata.name and _ready(pod) for pod in pods())

    imds.delete("filler")
    wait_until(lambda: [pod.metadata.name for pod in pods() if _ready(pod)] == [surge.metadata.name],
               timeout=120, message="the rollout to finish on the freed GPU")


def test_a_pools_budget_counts_its_pods_is_restored_and_goes_with_the_field(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess
) -> None:
    """spec.disruption on an ImageModelPool: the same budget over the pool's pods (`<pool>-pool`)."""
    custom = client.CustomObjectsApi(cluster.api_client)
    pool = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": POOL_KIND, "metadata": {"name": "shared"},
        "spec": {"family": "sdxl", "gpuClass": "h100-80gb", "replicas": 2, "disruption": {"maxUnavailable": 1}}})
    budget = wait_until(lambda: _budget(cluster, namespace, "shared-pool"), timeout=60, message="the pool's budget")
    assert budget.spec.max_unavailable == 1 and budget.metadata.labels["imagefleet.io/pool"] == "shared"
    (owner,) = budget.metadata.owner_references
    assert (owner.kind, owner.uid, owner.controller) == (POOL_KIND, pool["metadata"]["uid"], True)
    # The disruption controller counts the pods it selects: the pool's two, once they are ready.
    wait_until(lambda: (s := _budget(cluster, namespace, "shared-pool").status) is not None  # type: ignore[union-attr]
               and (s.expected_pods, s.current_healthy, s.disruptions_allowed) == (2, 2, 1),
               timeout=120, message="the pool's budget to count 2 healthy pods, 1 disruption allowed")

    client.PolicyV1Api(cluster.api_client).patch_namespaced_pod_disruption_budget(
        "shared-pool", namespace, {"spec": {"maxUnavailable": 0}})
    wait_until(lambda: _budget(cluster, namespace, "shared-pool").spec.max_unavailable == 1,  # type: ignore[union-attr]
               timeout=30, message="the pool's budget restored")

    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, "shared",
                                          {"spec": {"disruption": None}})
    wait_until(lambda: _budget(cluster, namespace, "shared-pool") is None, timeout=30,
               message="the pool's budget deleted")
