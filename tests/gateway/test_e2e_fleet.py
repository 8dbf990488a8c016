"""End to end on the local fleet: the operator, KWOK nodes, runtime pods as real processes at their
loopback pod IPs (the node agent, emulated engine), EndpointSlices from the controller manager, and
`imagefleet gateway` as its own process, driven with the official `openai` client."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION
from imagefleet import metrics as names
from imagefleet.builders.labels import NAME_LABEL
from imagefleet.gateway.watch import DEMAND_ANNOTATION
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import imagefleet_operator, imd_crd, operator_factory  # noqa: F401
from tests.operator.harness import OperatorProcess
from tests.gateway.support import GatewayProcess, gateway_process
from tests.runtime.support import sample

pytestmark = pytest.mark.slow
PROMPT = "a lighthouse at dusk"


def imd(name: str, tier: str, replicas: int = 1, group: str = "sdxl") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "sdxl"}, "gpuClass": "h100-80gb", "tier": tier, "replicas": replicas,
                     "routing": {"group": group}, "generation": {"defaultSteps": 2}}}


@pytest.fixture
def gateway(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    with gateway_process(cluster.kubeconfig, tmp_path / "gateway.log", "--namespaces", namespace,
                         "--hold-timeout", "120") as running:
        yield running


@pytest.fixture
def gateway_url(gateway: GatewayProcess) -> str:
    return gateway.url


def pod_ips(cluster: Cluster, namespace: str, name: str) -> list[str]:
    pods = client.CoreV1Api(cluster.api_client).list_namespaced_pod(namespace, label_selector=f"{NAME_LABEL}={name}")
    return [p.status.pod_ip for p in pods.items if p.status.pod_ip]


def images(ips: list[str]) -> float:
    return sum(sample(httpx.get(f"http://{ip}:8000/metrics", timeout=5).text, names.IMAGES_GENERATED_TOTAL)
               for ip in ips)


def test_quality_low_and_high_land_on_bulk_and_premium_pods(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess, gateway_url: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api_client)
    for name, tier in (("sdxl-bulk", "bulk"), ("sdxl-premium", "premium")):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, imd(name, tier))
    ai = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=150)
    # Held by the gateway until each resource's pod is Ready, then answered.
    for quality in ("low", "high"):
        ai.images.generate(model="sdxl", prompt=PROMPT, quality=quality, size="64x64")  # type: ignore[arg-type]
    assert [(m.id, m.model_extra and m.model_extra["tiers"]) for m in ai.models.list().data] == [
        ("sdxl", ["bulk", "premium"])]
    bulk, premium = pod_ips(cluster, namespace, "sdxl-bulk"), pod_ips(cluster, namespace, "sdxl-premium")
    assert bulk and premium and all(ip.startswith("127.") for ip in bulk + premium)
    for quality, target, other in (("low", bulk, premium), ("high", premium, bulk)):
        before, other_before = images(target), images(other)
        result = ai.images.generate(model="sdxl", prompt=PROMPT, quality=quality, size="64x64", n=2)  # type: ignore[arg-type]
        assert result.data is not None and len(result.data) == 2
        assert images(target) == before + 2 and images(other) == other_before


def test_scale_from_zero_timeline(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess, gateway_url: str
) -> None:
    """A resource at zero: the request is held, the demand annotation comes within 2 s, and it is answered
    once the pod is Ready. The autoscaler's part (issue 13) is played here by the test: it scales to 1 as
    soon as it sees the annotation, and prints the timeline."""
    custom = client.CustomObjectsApi(cluster.api_client)
    apps = client.AppsV1Api(cluster.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, imd("cold", "bulk", replicas=0, group="cold"))
    wait_until(lambda: apps.read_namespaced_deployment("cold", namespace).spec.replicas == 0, timeout=60,
               message="the Deployment at zero")
    ai = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=150)
    with ThreadPoolExecutor(1) as pool:
        arrived = time.monotonic()
        arrived_wall = datetime.now(UTC)
        pending = pool.submit(ai.images.generate, model="cold", prompt=PROMPT, size="64x64")

        def annotation() -> str | None:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cold")
            return (obj["metadata"].get("annotations") or {}).get(DEMAND_ANNOTATION)

        stamp = wait_until(annotation, timeout=5, interval=0.05, message="the demand annotation")
        signalled = time.monotonic()
        assert datetime.fromisoformat(stamp) >= arrived_wall.replace(microsecond=0)
        custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "cold",
                                                    {"spec": {"replicas": 1}})
        wait_until(lambda: apps.read_namespaced_deployment("cold", namespace).spec.replicas == 1, timeout=30,
                   interval=0.05, message="the Deployment at one")
        scaled = time.monotonic()
        wait_until(lambda: (apps.read_namespaced_deployment("cold", namespace).status.ready_replicas or 0) >= 1,
                   timeout=120, interval=0.05, message="the pod Ready")
        ready = time.monotonic()
        result = pending.result(timeout=150)
        answered = time.monotonic()
    assert result.data is not None and len(result.data) == 1
    assert signalled - arrived <= 2.0
    print(f"\nscale-from-zero timeline (emulated sdxl on h100-80gb; the test plays the autoscaler): "
          f"request 0.00 s, signal +{signalled - arrived:.2f} s, Deployment 0->1 +{scaled - arrived:.2f} s, "
          f"pod Ready +{ready - arrived:.2f} s, answer +{answered - arrived:.2f} s")


def test_deleting_a_pod_under_load_loses_no_accepted_request(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess, gateway: GatewayProcess
) -> None:
    """The deleted pod drains (answers what it accepted, 503 `draining` to the rest), then its process
    exits (connection refused): the gateway sends those elsewhere; nothing accepted is lost."""
    custom = client.CustomObjectsApi(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, imd("pair", "standard", replicas=2,
                                                                                 group="pair"))
    wait_until(lambda: len(pod_ips(cluster, namespace, "pair")) == 2, timeout=60, message="two pods with IPs")
    body = {"model": "pair", "prompt": PROMPT, "size": "512x512"}
    with httpx.Client(timeout=150) as warm:  # held until both are Ready
        for _ in range(4):
            assert warm.post(f"{gateway.url}/v1/images/generations", json=body).status_code == 200
    stop = time.monotonic() + 8
    codes: list[int] = []

    def client_loop() -> None:
        with httpx.Client(timeout=150) as session:
            while time.monotonic() < stop:
                codes.append(session.post(f"{gateway.url}/v1/images/generations", json=body).status_code)

    with ThreadPoolExecutor(6) as pool:
        loops = [pool.submit(client_loop) for _ in range(6)]
        wait_until(lambda: len(codes) >= 6, timeout=30, interval=0.05, message="requests flowing")
        victim = core.list_namespaced_pod(namespace, label_selector=f"{NAME_LABEL}=pair").items[0].metadata.name
        core.delete_namespaced_pod(victim, namespace)
        for item in loops:
            item.result()
    assert len(codes) > 12 and set(codes) == {200}, codes
    remaining = core.list_namespaced_pod(namespace, label_selector=f"{NAME_LABEL}=pair").items
    assert all(p.metadata.name != victim or p.metadata.deletion_timestamp for p in remaining)
    retried = sample(httpx.get(f"{gateway.metrics_url}/metrics", timeout=5).text, names.GATEWAY_RETRIES_TOTAL)
    print(f"\n{len(codes)} requests while a pod was deleted, all 200; the gateway sent {retried:.0f} again")
