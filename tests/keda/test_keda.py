"""KEDA really scales an imagefleet resource on the local fleet, through the real HPA controller;
and what KEDA and imagefleet's autoscaler each do when the trigger query returns no series.

KEDA's own operator and metrics server (built from its Go module) run beside the session's
control plane; the ScaledObject is the one docs/keda.md recommends; the HPA is
kube-controller-manager's. Runtime pods are real processes (emulated engine) that a real
Prometheus discovers through the API server.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from imagefleet import GROUP, KIND, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling import loop, policy
from imagefleet.autoscaling.prometheus import PrometheusClient
from imagefleet.autoscaling.queries import queue_depth_query
from imagefleet.bench.endpoints import Endpoints
from imagefleet.dev.prometheus import LocalPrometheus
from imagefleet.reconcile import status
from tests.autoscaling.test_e2e import closed_loop, prometheus  # noqa: F401  (fixture)
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.keda.conftest import KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS, scaled_object_for
from tests.operator.conftest import OperatorFactory, imd_crd, operator_factory  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

# kube-controller-manager's --horizontal-pod-autoscaler-sync-period (its default).
HPA_SYNC_SECONDS = 15
DOWN_WINDOW = 20
MAX_REPLICAS = 4
# Four of the 1 s scrapes, with margin: the window imagefleet's autoscaler reads at a 2 s interval.
RATE_WINDOW = "8s"
# Long enough for one HPA sync to scale up and the new pods to become Ready under load.
BURST_SECONDS = 45.0
SD15 = {
    "model": {"name": "sd15"}, "tier": "standard", "precision": "fp16", "gpuClass": "a100-80gb",
    "generation": {"defaultSteps": 30, "defaultWidth": 512, "defaultHeight": 512},
}
TINY = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"}


class View:
    """A resource, its runtime Deployment and the HPA KEDA made for it, through the API server."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
        self.apps: Any = cast(Any, client.AppsV1Api(cluster.api_client))
        self.hpas: Any = cast(Any, client.AutoscalingV2Api(cluster.api_client))
        self.core: Any = cast(Any, client.CoreV1Api(cluster.api_client))

    def create(self, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": self.name}, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def resource(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name))

    def wanted(self) -> int:
        """The resource's spec.replicas: what the HPA writes through the scale subresource."""
        return int(self.resource()["spec"]["replicas"])

    def deployment_replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment(self.name, self.namespace).spec.replicas)

    def following(self) -> int | None:
        """The Deployment's replicas once they equal the resource's (None before)."""
        replicas = self.deployment_replicas()
        return replicas if replicas == self.wanted() else None

    def condition(self, type_: str) -> dict[str, Any]:
        return dict(c.find(self.resource().get("status", {}).get("conditions"), type_) or {})

    def scale_with_keda(self, prometheus_url: str, down_window: int, **trigger_metadata: str) -> None:
        scaled = scaled_object_for(
            self.namespace, self.name, prometheus_url, down_window=down_window, rate_window=RATE_WINDOW
        )
        for trigger in scaled["spec"]["triggers"]:
            trigger["metadata"].update(trigger_metadata)
        self.custom.create_namespaced_custom_object(KEDA_GROUP, KEDA_VERSION, self.namespace, SCALED_OBJECTS, scaled)

    def scaled_object_ready(self) -> bool:
        found = self.custom.get_namespaced_custom_object(
            KEDA_GROUP, KEDA_VERSION, self.namespace, SCALED_OBJECTS, self.name
        )
        return any(
            entry["type"] == "Ready" and entry["status"] == "True"
            for entry in found.get("status", {}).get("conditions", [])
        )

    def hpa(self) -> Any:
        return self.hpas.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{self.name}", self.namespace)

    def hpa_condition(self, type_: str) -> Any:
        return next((entry for entry in self.hpa().status.conditions or [] if entry.type == type_), None)

    def hpa_events(self) -> list[tuple[str, str, str]]:
        """(reason, message, reporting component) of the HPA's events, oldest first."""
        listed = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=keda-hpa-{self.name}",
        ).items
        ordered = sorted(listed, key=lambda e: (e.last_timestamp or e.event_time or e.metadata.creation_timestamp))
        return [(e.reason, e.message, e.source.component if e.source else "") for e in ordered]


def assert_keda_owns_the_hpa(view: View, down_window: int) -> None:
    """The HPA exists, KEDA's ScaledObject controls it, it targets the resource's scale
    subresource with the ScaledObject's bounds and window, on KEDA's external metrics."""
    hpa = view.hpa()
    owners = [(o.api_version, o.kind, o.name, o.controller) for o in hpa.metadata.owner_references or []]
    assert owners == [(f"{KEDA_GROUP}/{KEDA_VERSION}", "ScaledObject", view.name, True)]
    target = hpa.spec.scale_target_ref
    assert (target.api_version, target.kind, target.name) == (f"{GROUP}/{VERSION}", KIND, view.name)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, MAX_REPLICAS)
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == down_window
    assert [m.type for m in hpa.spec.metrics] == ["External", "External", "External"]
    assert {m.external.metric.selector.match_labels["scaledobject.keda.sh/name"] for m in hpa.spec.metrics} == {
        view.name
    }


def queue_series(url: str, namespace: str, name: str) -> float | None:
    async def read() -> float | None:
        async with PrometheusClient(url) as metrics:
            return await metrics.value(queue_depth_query(namespace, name))

    return asyncio.run(read())


async def test_keda_scales_the_resource_up_under_load_and_back_through_the_hpa(
    keda: Cluster, namespace: str, prometheus: LocalPrometheus, operator_factory: OperatorFactory,
) -> None:
    operator_factory(namespace, env={"IMAGEFLEET_PROMETHEUS_URL": ""})  # autoscaling off: it only runs the resource
    view = View(keda, namespace, "keda-e2e")
    view.create({**SD15, "replicas": 1, "autoscaling": {"enabled": False}})
    endpoints = Endpoints(keda.api_client, namespace, view.name)
    await asyncio.to_thread(wait_until, endpoints.any_ready, timeout=60, message="a ready endpoint")
    await asyncio.to_thread(
        wait_until, lambda: queue_series(prometheus.url, namespace, view.name) is not None, timeout=60,
        message="Prometheus to scrape the pod's queue depth",
    )

    view.scale_with_keda(prometheus.url, DOWN_WINDOW)
    await asyncio.to_thread(wait_until, view.scaled_object_ready, timeout=60, message="the ScaledObject Ready")
    assert_keda_owns_the_hpa(view, DOWN_WINDOW)
    # The HPA controller reads the three metrics (no gateway here: its queue reads 0) through the aggregation layer and KEDA's metrics server.
    await asyncio.to_thread(
        wait_until, lambda: (cond := view.hpa_condition("ScalingActive")) is not None and cond.status == "True"
        and len(view.hpa().status.current_metrics or []) == 3,
        timeout=2 * HPA_SYNC_SECONDS + 10, message="the HPA reading KEDA's three external metrics",
    )
    assert view.wanted() == 1

    # Load above one replica's capacity: the queue's metric asks for more, the HPA writes the
    # resource's scale subresource, and the operator's Deployment follows.
    started = time.monotonic()
    load = asyncio.create_task(closed_loop(endpoints, BURST_SECONDS))
    await asyncio.to_thread(
        wait_until, lambda: view.wanted() > 1, timeout=3 * HPA_SYNC_SECONDS, interval=0.5,
        message="the HPA to scale the resource up",
    )
    scaled_at = time.monotonic()
    peak = await asyncio.to_thread(
        wait_until, lambda: view.following() if view.wanted() > 1 else None, timeout=30,
        message="the Deployment to follow the resource's replicas",
    )
    answers = await load
    ended = time.monotonic()
    peak = max(peak, view.wanted())
    assert {a.status for a in answers} <= {200, 429}
    rescales = [(message, source) for reason, message, source in view.hpa_events() if reason == "SuccessfulRescale"]
    assert rescales and all(source == "horizontal-pod-autoscaler" for _, source in rescales), rescales
    assert re.search(r"external metric s[0-2]-prometheus.* above target", rescales[0][0]), rescales

    # Load gone: the metrics fall to 0 and, after the scale-down window, the HPA takes it back to 1.
    await asyncio.to_thread(
        wait_until, lambda: view.wanted() == 1 and view.following() == 1,
        timeout=DOWN_WINDOW + 4 * HPA_SYNC_SECONDS, interval=0.5, message="back to 1 replica",
    )
    back_at = time.monotonic()
    downs = [message for reason, message, _ in view.hpa_events() if reason == "SuccessfulRescale" and "below" in message]
    assert downs and "New size: 1" in downs[-1], view.hpa_events()
    print(
        f"KEDA + HPA: 1 -> {peak} replicas {scaled_at - started:.1f}s after the load began; back to 1 "
        f"{back_at - ended:.1f}s after it ended (scale-down window {DOWN_WINDOW}s, HPA sync {HPA_SYNC_SECONDS}s)"
    )


def hold_for(seconds: float, *checks: Any) -> None:
    """Every check holds at every look over `seconds` (proving that nothing moves)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for check in checks:
            check()
        time.sleep(0.5)


def test_a_query_without_series_reads_zero_in_keda_and_holds_imagefleet(
    keda: Cluster, namespace: str, operator_factory: OperatorFactory, tmp_path: Path,
) -> None:
    # A Prometheus that has lost the pods' targets: every query about them returns no series.
    with LocalPrometheus(tmp_path / "prometheus", scrape_interval="1s") as blind:
        operator_factory(
            namespace, env={"IMAGEFLEET_PROMETHEUS_URL": blind.url, "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": "2"}
        )
        window = 10
        keda_default = View(keda, namespace, "keda-default")
        keda_strict = View(keda, namespace, "keda-strict")
        imagefleet = View(keda, namespace, "imagefleet")
        for view in (keda_default, keda_strict):
            view.create({**TINY, "replicas": 2, "autoscaling": {"enabled": False}})
        # Two replicas under the autoscaler: start at a floor of 2, then lower the floor to 1,
        # so that a scale-down is allowed and only the missing signal can stop it.
        autoscaling = {"enabled": True, "maxReplicas": MAX_REPLICAS, "scaleDownStabilizationSeconds": window}
        imagefleet.create({**TINY, "autoscaling": {**autoscaling, "minReplicas": 2}})
        for view in (keda_default, keda_strict, imagefleet):
            wait_until(lambda v=view: v.deployment_replicas() == 2, timeout=60, message=f"{view.name} at 2")
        imagefleet.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, imagefleet.name, {"spec": {"autoscaling": {"minReplicas": 1}}},
        )
        assert queue_series(blind.url, namespace, keda_default.name) is None

        keda_default.scale_with_keda(blind.url, window)  # KEDA's defaults: ignoreNullValues true
        keda_strict.scale_with_keda(blind.url, window, ignoreNullValues="false")

        # KEDA's default: the empty answer is 0, and the HPA scales down to minReplicaCount.
        wait_until(
            lambda: keda_default.wanted() == 1 and keda_default.following() == 1,
            timeout=window + 4 * HPA_SYNC_SECONDS, interval=0.5, message="KEDA (defaults) to scale down on no series",
        )
        metrics = keda_default.hpa().status.current_metrics or []
        assert metrics and all(parse_quantity(m.external.current.average_value) == 0 for m in metrics), metrics
        # ignoreNullValues "false": the empty answer is an error, and the HPA keeps the replicas.
        failed = wait_until(
            lambda: (cond := keda_strict.hpa_condition("ScalingActive")) is not None and cond.status == "False" and cond,
            timeout=2 * HPA_SYNC_SECONDS + 10, message="the strict HPA failing to get its metric",
        )
        assert failed.reason == "FailedGetExternalMetric", failed
        # imagefleet: no series is no signal, and the autoscaler holds what it has. Its first report
        # comes once a pod has been ready for one rate window (before that, no series is expected);
        # on a loaded machine the pods' runtimes may not be ready yet when the HPAs have moved.
        missing = wait_until(
            lambda: (cond := imagefleet.condition(c.METRICS_AVAILABLE)).get("reason") != status.AWAITING_METRICS
            and cond,
            timeout=120, message="imagefleet's first report on its metrics",
        )
        assert (missing.get("status"), missing.get("reason")) == (c.FALSE, loop.NO_METRICS), missing
        assert "holding 2 replicas" in missing["message"]
        assert imagefleet.condition(loop.SCALING).get("reason") == policy.METRICS_MISSING
        hold_for(
            window + HPA_SYNC_SECONDS,  # any scale-down would have come by then
            lambda: keda_strict.following() == 2 or pytest.fail("the strict HPA moved without its metric"),
            lambda: imagefleet.deployment_replicas() == 2 or pytest.fail("imagefleet moved without a signal"),
        )
        print(
            f"no series: KEDA defaults scaled {keda_default.name} 2 -> 1; KEDA with ignoreNullValues false held 2 "
            f"({failed.reason}); imagefleet held 2 ({missing['reason']}: {missing['message']})"
        )
