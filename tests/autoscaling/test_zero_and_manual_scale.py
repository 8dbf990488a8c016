"""Scale to and from zero, and `kubectl scale` while autoscaling is on, against the real local
control plane with the operator running (`imagefleet run`). The test writes the gateway's
imagefleet.io/demand-at annotation itself, as the gateway does."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling import loop, policy
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd, operator_factory  # noqa: F401  (fixtures)
from tests.operator.conftest import OperatorFactory
from tests.operator.harness import Imds

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TINY = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"}
# A long interval: anything faster than it is the event handler, not the round.
OPERATOR_ENV = {"IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": "60", "IMAGEFLEET_PROMETHEUS_URL": ""}
WAKE_LIMIT_SECONDS = 2.0


def spec(**autoscaling: Any) -> dict[str, Any]:
    return {**TINY, "autoscaling": {"enabled": True, "maxReplicas": 3, **autoscaling}}


def deployment_replicas(cluster: Cluster, namespace: str, name: str) -> int | None:
    try:
        found = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return int(found.spec.replicas)


def event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={KIND}"
    ).items
    return [event.reason for event in events]


def condition(imds: Imds, name: str, type_: str) -> dict[str, Any]:
    found = imds.condition(name, type_)
    assert found is not None, f"no {type_} in {imds.get(name).get('status')}"
    return found


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (spec(minReplicas=0), False),
        (spec(minReplicas=0, demandSource="Gateway"), True),
        ({**spec(minReplicas=0, demandSource="Gateway"), "tier": "premium"}, False),
        (spec(minReplicas=0, demandSource="Queue"), False),
    ],
    ids=["zero-without-demand-source", "zero-with-gateway", "premium-zero", "unknown-source"],
)
def test_min_replicas_zero_needs_a_demand_source(
    cluster: Cluster, namespace: str, imd_crd: None, body: dict[str, Any], accepted: bool  # noqa: F811
) -> None:
    imds = Imds(cluster.api_client, namespace)
    if accepted:
        imds.create("zero", body)
        return
    with pytest.raises(ApiException) as refused:
        imds.create("zero", body)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    field = "spec.autoscaling.demandSource" if body["autoscaling"].get("demandSource") == "Queue" else (
        "spec.autoscaling.minReplicas")
    assert field in message, message


def test_gateway_demand_wakes_a_resource_at_zero_within_two_seconds(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory  # noqa: F811
) -> None:
    operator_factory(namespace, OPERATOR_ENV)
    imds = Imds(cluster.api_client, namespace)
    imds.create("idle", spec(minReplicas=0, demandSource="Gateway"))
    wait_until(
        lambda: (imds.condition("idle", loop.SCALING) or {}).get("reason") == policy.SCALED_TO_ZERO,
        timeout=60, message="the autoscaler to report ScaledToZero",
    )
    assert deployment_replicas(cluster, namespace, "idle") == 0
    assert imds.get("idle")["status"]["desiredReplicas"] == 0
    assert "gateway wakes it" in condition(imds, "idle", loop.SCALING)["message"]
    wait_until(lambda: (imds.condition("idle", c.READY) or {}).get("reason") == "ScaledToZero", timeout=30,
               message="Ready=False ScaledToZero (kubectl get imd -o wide shows it in REASON)")

    # The gateway holds a request: it writes demand-at (RFC 3339, fractional seconds, UTC).
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.CustomObjectsApi(cluster.api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "idle", {"metadata": {"annotations": {loop.DEMAND_ANNOTATION: stamp}}}
    )
    written = time.monotonic()
    wait_until(lambda: deployment_replicas(cluster, namespace, "idle") == 1, timeout=30, interval=0.05,
               message="the Deployment to go 0 -> 1")
    elapsed = time.monotonic() - written
    print(f"demand-at written -> Deployment at 1 replica: {elapsed:.2f}s")
    assert elapsed < WAKE_LIMIT_SECONDS
    # The status is the operator's next write after the Deployment's: read it once it is there.
    scaling = wait_until(
        lambda: (found := condition(imds, "idle", loop.SCALING))["reason"] == policy.SCALED_FROM_ZERO and found,
        timeout=10, interval=0.05, message="Scaling=True ScaledFromZero after the wake",
    )
    assert scaling["status"] == c.TRUE
    assert "the gateway asked for this resource" in scaling["message"]
    assert policy.SCALED_FROM_ZERO in event_reasons(cluster, namespace, "idle")
    # Awake with no metrics (no Prometheus here): it holds 1, never back to 0 on missing data.
    wait_until(lambda: condition(imds, "idle", loop.SCALING)["reason"] == policy.METRICS_MISSING, timeout=90,
               message="the next evaluation")
    assert deployment_replicas(cluster, namespace, "idle") == 1


def test_kubectl_scale_while_autoscaling_gets_an_event_and_a_condition(
    cluster: Cluster, namespace: str, operator_factory: OperatorFactory  # noqa: F811
) -> None:
    operator_factory(namespace, OPERATOR_ENV)
    imds = Imds(cluster.api_client, namespace)
    imds.create("owned", spec(minReplicas=1))
    wait_until(lambda: imds.get("owned").get("status", {}).get("desiredReplicas") == 1, timeout=60,
               message="the autoscaler's first decision")
    # What `kubectl scale imd owned --replicas=3` sends.
    client.CustomObjectsApi(cluster.api_client).patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "owned", {"spec": {"replicas": 3}}
    )
    wait_until(lambda: imds.condition("owned", loop.MANUAL_SCALING) is not None, timeout=30,
               message="the ManualScaling condition")
    manual = condition(imds, "owned", loop.MANUAL_SCALING)
    assert (manual["status"], manual["reason"]) == (c.TRUE, loop.MANUAL_SCALE_IGNORED)
    assert manual["message"].startswith("spec.replicas was set to 3 (kubectl scale) while autoscaling is on: ignored")
    wait_until(lambda: loop.MANUAL_SCALE_IGNORED in event_reasons(cluster, namespace, "owned"), timeout=30,
               message="the ManualScaleIgnored Event")
    assert deployment_replicas(cluster, namespace, "owned") == 1
    assert imds.get("owned")["status"]["desiredReplicas"] == 1
