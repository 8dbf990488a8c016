"""A release round trip through a local OCI registry (CNCF Distribution, loopback only): both
images and the packaged chart pushed, the chart installed from oci:// with image references
pointing at the registry, every image the release names present there; and a tag that is no
release refused by `helm install` before anything is created."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from imagefleet.dev import images
from imagefleet.dev.registry import LocalRegistry
from tests.chart.helm import CHART, Helm, one
from tests.conftest import Cluster

from .conftest import RUNTIME_IMAGE_TIMEOUT_SECONDS

pytestmark = [pytest.mark.slow]

PROJECT = "imagefleet"  # the registry path the images are published under (ghcr.io/imagefleet/...)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as server:
        yield server


def _split(reference: str) -> tuple[str, str, str]:
    """host:port/path:tag -> (host:port, path, tag)."""
    name, _, tag = reference.rpartition(":")
    host, _, path = name.partition("/")
    return host, path, tag


def _operator_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def _runtime_image(container: dict[str, Any]) -> str:
    return next(str(item["value"]) for item in container["env"] if item["name"] == "IMAGEFLEET_RUNTIME_IMAGE")


def test_chart_defaults_name_the_images_published_with_its_app_version(helm: Helm) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    container = _operator_container(helm.template())
    assert container["image"] == f"ghcr.io/{PROJECT}/imagefleet-operator:{app_version}"
    assert values["image"]["repository"] == f"ghcr.io/{PROJECT}/imagefleet-operator"
    assert _runtime_image(container) == f"ghcr.io/{PROJECT}/imagefleet-runtime:{app_version}"


def test_images_and_chart_round_trip_through_an_oci_registry(
    cluster: Cluster, namespace: str, helm: Helm, registry: LocalRegistry,
    operator_image: images.Image, tmp_path: Path,
) -> None:
    # 1. The chart as `helm package` publishes it, pushed to oci://.
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    helm.run("push", str(tmp_path / f"imagefleet-{chart['version']}.tgz"), f"oci://{registry.host}/charts", "--plain-http")
    oci = f"oci://{registry.host}/charts/imagefleet"
    published = yaml.safe_load(helm.run("show", "chart", oci, "--version", chart["version"], "--plain-http").stdout)
    app_version = published["appVersion"]

    # 2. The operator image, tagged with the packaged chart's appVersion, as a release tags it
    # (the runtime image's push is test_runtime_image_round_trips_through_the_registry).
    push(registry, operator_image, "imagefleet-operator", app_version)

    # 3. Installed from oci:// with only the repositories pointing at the registry: the tags
    # are the chart's own default, its appVersion.
    release = "oci-" + uuid.uuid4().hex[:6]
    started = time.monotonic()
    helm.with_values(
        "install", release, oci, "--version", chart["version"], "--plain-http", "--namespace", namespace,
        kubeconfig=cluster.kubeconfig,
        values={"image": {"repository": f"{registry.host}/{PROJECT}/imagefleet-operator"},
                "runtimeImage": {"repository": f"{registry.host}/{PROJECT}/imagefleet-runtime"},
                "watchNamespaces": [namespace]},
    )
    print(f"[registry] helm install from {oci} in {time.monotonic() - started:.1f}s")
    deployment = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(f"{release}-imagefleet", namespace)
    container = client.ApiClient().sanitize_for_serialization(deployment.spec.template.spec.containers[0])
    host, path, tag = _split(container["image"])
    assert (host, tag) == (registry.host, app_version), container["image"]
    assert registry.has_manifest(path, tag), f"the release names {container['image']}, which the registry does not have"
    assert not registry.has_manifest(f"{PROJECT}/imagefleet-operator", "0.0.0-missing")  # the check can fail
    runtime = _runtime_image(container)
    assert runtime == f"{registry.host}/{PROJECT}/imagefleet-runtime:{app_version}", runtime


@pytest.mark.runtime_image
@pytest.mark.timeout(RUNTIME_IMAGE_TIMEOUT_SECONDS)
def test_runtime_image_round_trips_through_the_registry(registry: LocalRegistry, runtime_image: images.Image) -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    push(registry, runtime_image, "imagefleet-runtime", version)
    assert registry.has_manifest(f"{PROJECT}/imagefleet-runtime", str(version))


def push(registry: LocalRegistry, image: images.Image, name: str, tag: str) -> None:
    """Push as a release would tag it (layers uncompressed: gzip is CPU a loopback push does not need)."""
    started = time.monotonic()
    images.buildah("push", "--quiet", "--tls-verify=false", "--disable-compression", image.reference,
                   f"docker://{registry.host}/{PROJECT}/{name}:{tag}")
    print(f"[registry] pushed {name} ({image.size_bytes / 1e6:.0f} MB) in {time.monotonic() - started:.0f}s")


@pytest.mark.parametrize(
    ("values", "path", "tag"),
    [({"image": {"tag": "latest"}}, "/image/tag", "latest"),
     ({"runtimeImage": {"tag": "v0.1.0"}}, "/runtimeImage/tag", "v0.1.0")],
)
def test_a_tag_that_is_no_release_fails_helm_install_at_once_naming_it(
    cluster: Cluster, namespace: str, helm: Helm, values: dict[str, Any], path: str, tag: str
) -> None:
    started = time.monotonic()
    result = helm.with_values("install", "bad-tag", str(CHART), "--namespace", namespace,
                              kubeconfig=cluster.kubeconfig, values=values, check=False)
    elapsed = time.monotonic() - started
    print(f"[registry] helm install with {values}: refused in {elapsed:.1f}s: {result.stderr.strip()}")
    assert result.returncode != 0
    assert path in result.stderr and tag in result.stderr, result.stderr
    assert client.AppsV1Api(cluster.api_client).list_namespaced_deployment(namespace).items == []
