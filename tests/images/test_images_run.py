"""The two images built with buildah on a locally made Debian bookworm base, and run:
the operator from its image with the chart's ServiceAccount token reconciles a resource on the
local control plane; the runtime from its image serves the `tiny` model to the official
openai client. Sizes and build times are printed (cold when the machine had no image yet)."""

from __future__ import annotations

import base64
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from openai import OpenAI

from imagefleet.dev import images
from imagefleet.dev.processes import free_port
from tests.chart.credentials import service_account_kubeconfig
from tests.chart.helm import CHART, Helm
from tests.chart.test_rbac import chart_operator_env, chart_service_account
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.harness import Imds, operator_writes

from .conftest import RUNTIME_IMAGE_TIMEOUT_SECONDS
from .container import Container

pytestmark = [pytest.mark.slow]

CATALOG = "/etc/imagefleet/gpu-classes.yaml"
KUBECONFIG = "/etc/imagefleet/kubeconfig"
NON_ROOT = "10001:10001"


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def test_operator_image_reconciles_with_the_charts_service_account(
    cluster: Cluster, namespace: str, helm: Helm, imd_crd: None, operator_image: images.Image, tmp_path: Path
) -> None:
    release = "img-" + uuid.uuid4().hex[:6]
    helm.with_values("install", release, str(CHART), "--namespace", namespace, kubeconfig=cluster.kubeconfig,
                     values={"watchNamespaces": [namespace]})
    core = client.CoreV1Api(cluster.api_client)
    account = chart_service_account(cluster, release, namespace)
    kubeconfig = service_account_kubeconfig(cluster.api_client, cluster.kubeconfig, namespace, account,
                                            tmp_path / "operator.kubeconfig")
    env = chart_operator_env(core, release, namespace, tmp_path)
    catalog = Path(env["IMAGEFLEET_GPU_CLASSES_FILE"])
    for path in (kubeconfig, catalog):
        path.chmod(0o644)  # readable by the image's non-root user
    liveness = free_port()
    deployment = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(f"{release}-imagefleet", namespace)
    # The chart's own arguments, with a liveness port free on this host's network.
    args = [f"--liveness=http://127.0.0.1:{liveness}/healthz" if arg.startswith("--liveness=") else arg
            for arg in deployment.spec.template.spec.containers[0].args]
    container = Container(
        operator_image.reference, args, tmp_path / "operator.log",
        env=env | {"IMAGEFLEET_GPU_CLASSES_FILE": CATALOG, "KUBECONFIG": KUBECONFIG},
        mounts={catalog: f"{CATALOG}:ro", kubeconfig: f"{KUBECONFIG}:ro"},
    )
    try:
        assert (container.entrypoint, container.user) == (["imagefleet"], NON_ROOT)
        wait_until(lambda: container.running() and _http_ok(f"http://127.0.0.1:{liveness}/healthz"), timeout=90,
                   message=f"the operator in its image to be live (log: {container.log})")
        imds = Imds(cluster.api_client, namespace)
        imds.create("from-image", {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32"})
        imd = imds.wait_ready("from-image", timeout=90)
    finally:
        container.stop()
    assert imd["status"]["observedGeneration"] == imd["metadata"]["generation"]
    writers = {event["user"]["username"] for event in operator_writes(cluster.plane.audit_log, 0, namespace)}
    assert writers == {f"system:serviceaccount:{namespace}:{account}"}, writers


@pytest.mark.runtime_image
@pytest.mark.timeout(RUNTIME_IMAGE_TIMEOUT_SECONDS)
def test_runtime_image_serves_the_tiny_model_to_the_openai_client(runtime_image: images.Image, tmp_path: Path) -> None:
    port = free_port()
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the pod mounts an emptyDir at /cache, writable by the runtime's user
    container = Container(
        runtime_image.reference, ["--model", "tiny", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "runtime.log", mounts={cache: "/cache:rw"},
    )
    try:
        assert (container.entrypoint, container.user) == (["imagefleet-runtime"], NON_ROOT)
        wait_until(lambda: container.running() and _http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=180,
                   message=f"the runtime in its image to be ready (log: {container.log})")
        openai = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        result = openai.images.generate(model="tiny", prompt="a red cube", n=1, response_format="b64_json")
    finally:
        container.stop()
    image = base64.b64decode(result.data[0].b64_json or "")
    assert image.startswith(b"\x89PNG\r\n\x1a\n"), image[:16]
