"""Who owns MetricsAvailable on an autoscaled resource, on the real API server.

The reconciler's one-time MetricsAvailable=Unknown AwaitingMetrics is a server-side apply
without force: planned from a watch copy that has not yet seen the autoscaler's first
verdict, it must fail with 409 and leave that verdict alone (forced, it took the condition
back and the autoscaler wrote it again: one more write per new resource at scale).
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from kubernetes import client, config

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet import conditions as c
from imagefleet.autoscaling.loop import FIELD_MANAGER as AUTOSCALER
from imagefleet.kube import INITIAL_METRICS_FIELD_MANAGER, Conflict, Kube
from imagefleet.reconcile.status import initial_metrics_condition
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster


def metrics_available(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return c.find((found.get("status") or {}).get("conditions"), c.METRICS_AVAILABLE)


async def test_the_awaiting_metrics_apply_never_takes_the_autoscalers_verdict_back(
    cluster: Cluster, imd_crd: None, namespace: str
) -> None:
    custom: Any = cast(Any, client.CustomObjectsApi(cluster.api_client))
    for name in ("reported", "fresh"):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "autoscaling": {"enabled": True}},
        })
    kube = Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    try:
        found = c.make(c.METRICS_AVAILABLE, c.TRUE, "MetricsFound", "queue depth and latency read", generation=1,
                       previous=None)
        await kube.apply_status(namespace, "reported", {"conditions": [found]}, AUTOSCALER)
        # Planned from a copy without the autoscaler's condition, as a lagging watch shows it.
        awaiting = initial_metrics_condition({}, autoscaling=True, generation=1)
        assert awaiting is not None
        with pytest.raises(Conflict):
            await kube.apply_status(namespace, "reported", awaiting, INITIAL_METRICS_FIELD_MANAGER, force=False)
        kept = metrics_available(cluster, namespace, "reported")
        assert kept is not None and (kept["status"], kept["reason"]) == (c.TRUE, "MetricsFound")

        # Nobody reported yet: the apply lands, and the autoscaler's first (forced) apply replaces it.
        await kube.apply_status(namespace, "fresh", awaiting, INITIAL_METRICS_FIELD_MANAGER, force=False)
        waiting = metrics_available(cluster, namespace, "fresh")
        assert waiting is not None and waiting["reason"] == "AwaitingMetrics"
        answer = await kube.apply_status(namespace, "fresh", {"conditions": [found]}, AUTOSCALER)
        replaced = metrics_available(cluster, namespace, "fresh")
        assert replaced is not None and replaced["reason"] == "MetricsFound"
        # The answer the loops keep as their newest copy carries no managedFields (the server's object does).
        assert c.find(answer["status"]["conditions"], c.METRICS_AVAILABLE) == replaced
        assert "managedFields" not in answer["metadata"]
        live = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fresh")
        assert {entry["manager"] for entry in live["metadata"]["managedFields"]} >= {AUTOSCALER}
    finally:
        kube.close()
