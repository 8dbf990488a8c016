"""Two operator replicas (the chart's replicaCount: 2) share the chart's kopf peering object:
one serves, the other waits, and the resource is reconciled."""

from __future__ import annotations

import uuid
from pathlib import Path

from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.harness import OperatorProcess

from .credentials import service_account_kubeconfig
from .helm import CHART, Helm
from .test_rbac import chart_operator_env, chart_service_account, user_manifest

ALL_PAUSED = "Pausing all operators, including self"


def test_two_replicas_one_active(helm: Helm, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    release = "ha-" + uuid.uuid4().hex[:6]
    core = client.CoreV1Api(cluster.api_client)
    operators: list[OperatorProcess] = []
    try:
        helm.with_values("install", release, str(CHART), "--namespace", namespace, kubeconfig=cluster.kubeconfig,
                         values={"replicaCount": 2, "peering": {"enabled": True, "name": release},
                                 "watchNamespaces": [namespace]})
        kubeconfig = service_account_kubeconfig(cluster.api_client, cluster.kubeconfig, namespace,
                                                chart_service_account(cluster, release, namespace),
                                                tmp_path / "operator.kubeconfig")
        for replica in range(2):
            env = chart_operator_env(core, release, namespace, tmp_path)  # a metrics port each
            operators.append(OperatorProcess(kubeconfig, namespace, tmp_path / f"replica-{replica}.log", env))
            operators[-1].start()
        custom = client.CustomObjectsApi(cluster.api_client)

        def peers() -> dict[str, dict[str, object]]:
            body = custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", release)
            return dict(body.get("status") or {})

        announced = wait_until(lambda: len(p := peers()) == 2 and p, timeout=60,
                               message="both replicas announced in the chart's KopfPeering")
        # kopf pauses every operator that sees a live peer of the same priority: the
        # replicas of one Deployment must differ, so that the highest serves and the other waits.
        priorities = [peer["priority"] for peer in announced.values()]
        assert priorities[0] != priorities[1], f"same-priority replicas freeze each other: {announced}"
        manifest = user_manifest(namespace)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        apps = client.AppsV1Api(cluster.api_client)
        wait_until(lambda: apps.list_namespaced_deployment(namespace).items, timeout=90,
                   message="the active replica to reconcile")
        logs = [operator.log_path.read_text(errors="replace") for operator in operators]
        assert not any(ALL_PAUSED in log for log in logs), "same-priority replicas froze each other"
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest["metadata"]["name"])
        wait_until(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
                   timeout=60, message="the resource deleted while the operators run")
    finally:
        for operator in operators:
            operator.stop()
        helm.run("uninstall", release, "--namespace", namespace, kubeconfig=cluster.kubeconfig, check=False)
