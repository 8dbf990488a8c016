"""Every Kubernetes object shown in README.md and docs/ is accepted by the API server: a
server-side dry run against the local control plane with the ImageModelDeployment CRD, the
InferencePool CRD (third_party/), the ServiceMonitor CRD and KEDA's ScaledObject CRD installed.
Objects go into the test's namespace; a spec fragment is laid over a base (yaml_blocks.BASE_SPEC)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagefleet.dev.build import binary_dir, ensure_built
from imagefleet.dev.components import KEDA, PROMETHEUS_OPERATOR_CRDS
from tests.chart.helm import kubectl_binary
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the ImageModelDeployment CRD, installed

from .yaml_blocks import ROOT, Block, blocks, kind_of, objects

POOL_CRD = (
    ROOT / "third_party" / "gateway-api-inference-extension-v1.6.0" / "inference.networking.k8s.io_inferencepools.yaml"
)
OBJECT_BLOCKS = [block for block in blocks() if kind_of(block) in ("objects", "spec")]


def _crds() -> list[dict[str, object]]:
    """The third-party kinds the pages show: InferencePool, ServiceMonitor, and KEDA's ScaledObject
    (its CRD comes with the KEDA build, which the KEDA tests need too)."""
    ensure_built([PROMETHEUS_OPERATOR_CRDS, KEDA], progress=lambda message: print(f"[crds] {message}"))
    monitoring = yaml.safe_load_all((binary_dir(PROMETHEUS_OPERATOR_CRDS) / "crds.yaml").read_text())
    keda = yaml.safe_load_all((binary_dir(KEDA) / "crds.yaml").read_text())
    return [yaml.safe_load(POOL_CRD.read_text()),
            *(crd for crd in monitoring if crd and crd["spec"]["names"]["kind"] == "ServiceMonitor"),
            *(crd for crd in keda if crd and crd["spec"]["names"]["kind"] == "ScaledObject")]


@pytest.fixture(scope="module")
def third_party_crds(cluster: Cluster) -> Iterator[None]:
    """The InferencePool and ServiceMonitor CRDs, Established; the ones this installed are removed afterwards
    (other tests run without them)."""
    extensions = client.ApiextensionsV1Api(cluster.api_client)
    crds, installed = _crds(), []
    for crd in crds:
        try:
            extensions.create_custom_resource_definition(crd)
            installed.append(crd)
        except ApiException as error:
            if error.status != 409:  # already there: another test's, left as it is
                raise
    try:
        for crd in crds:
            name = crd["metadata"]["name"]  # type: ignore[index]

            def established(name: str = name) -> bool:
                conditions = extensions.read_custom_resource_definition(name).status.conditions or []
                return any(c.type == "Established" and c.status == "True" for c in conditions)

            wait_until(established, timeout=30, message=f"CRD {name} to be Established")
        yield
    finally:
        for crd in installed:
            try:
                extensions.delete_custom_resource_definition(crd["metadata"]["name"])  # type: ignore[index]
            except ApiException as error:
                if error.status != 404:
                    raise


def dry_run(
    cluster: Cluster, namespace: str, documents: list[dict[str, object]], work: Path
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side --dry-run=server` of `documents`, placed in `namespace`."""
    manifest = work / "block.yaml"
    placed = [{**doc, "metadata": {**doc.get("metadata", {}), "namespace": namespace}}  # type: ignore[dict-item]
              for doc in documents]
    manifest.write_text(yaml.safe_dump_all(placed))
    return subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(work / "cache"),
         "apply", "--server-side", "--dry-run=server", "--field-manager=imagefleet-docs", "-f", str(manifest)],
        capture_output=True, text=True, timeout=60,
    )


def test_the_pages_show_objects() -> None:
    assert len(OBJECT_BLOCKS) >= 5


@pytest.mark.parametrize("block", OBJECT_BLOCKS, ids=lambda block: block.where)
def test_every_object_shown_is_accepted_by_the_api_server(
    cluster: Cluster, imd_crd: None, third_party_crds: None, namespace: str, block: Block, tmp_path: Path,  # noqa: F811
) -> None:
    # kubectl's discovery may lag a CRD that was just Established by a moment: wait for a verdict that
    # is the API server's, not kubectl's "no matches for kind".
    results: list[subprocess.CompletedProcess[str]] = []

    def answered() -> bool:
        results.append(dry_run(cluster, namespace, objects(block), tmp_path))
        return "no matches for kind" not in results[-1].stderr

    wait_until(answered, timeout=20, message=f"{block.where}: kubectl to discover its kinds")
    assert results[-1].returncode == 0, f"{block.where}:\n{results[-1].stderr}"
