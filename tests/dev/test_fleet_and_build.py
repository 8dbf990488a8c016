"""Unit tests of the dev tooling that need no cluster: the fleet's nodes and the Go wrapper module."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import pytest

from imagefleet.dev import build, components
from imagefleet.dev.errors import DevError
from imagefleet.dev.fleet import GPU_RESOURCE, load_fleet, node_manifests

UPSTREAM_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/spf13/cobra v1.10.0
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-apiserver => ./staging/src/k8s.io/sample-apiserver
)
"""


def test_builtin_fleet_has_every_gpu_class_with_gfd_labels() -> None:
    nodes = node_manifests(load_fleet())
    by_product: dict[str, list[dict]] = {}
    for node in nodes:
        by_product.setdefault(node["metadata"]["labels"].get("nvidia.com/gpu.product", "none"), []).append(node)
    assert set(by_product) == {
        "none", "Tesla-T4", "NVIDIA-L4", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-H200",
    }
    h100 = by_product["NVIDIA-H100-80GB-HBM3"][0]
    assert h100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert h100["status"]["capacity"][GPU_RESOURCE] == "8"
    assert h100["spec"]["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    cpu = by_product["none"][0]
    assert GPU_RESOURCE not in cpu["status"]["capacity"] and cpu["spec"]["taints"] == []


def test_fleet_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("classes:\n  t4-16gb:\n    nodes: -1\n")
    with pytest.raises(DevError, match=str(bad)):
        load_fleet(bad)


def test_wrapper_module_pins_only_required_local_replacements() -> None:
    go_mod = build.wrapper_go_mod(components.KUBERNETES, UPSTREAM_GO_MOD)
    assert "require k8s.io/kubernetes v1.36.3" in go_mod
    assert "k8s.io/api => k8s.io/api v0.36.3" in go_mod
    assert "k8s.io/client-go => k8s.io/client-go v0.36.3" in go_mod
    assert "sample-apiserver" not in go_mod
    assert "go 1.26.0" in go_mod


def test_missing_go_is_a_one_line_instruction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGEFLEET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevError, match="Go is not on PATH") as error:
        build.ensure_built([components.KWOK], progress=lambda _: None)
    assert "\n" not in str(error.value)


def test_a_source_patch_applies_exactly_once_or_names_the_file() -> None:
    patch = components.KUBERNETES.patches[0]
    original = "before\n" + patch.old + " (127.0.0.0/8, ::1/128)\"))\n\t}\nafter\n"
    patched = build.patched_source(components.KUBERNETES, patch, original)
    assert components.SIMULATED_POD_CIDR in patched and patched.startswith("before\n") and patched.endswith("after\n")
    with pytest.raises(DevError, match=r"pkg/apis/core/validation/validation.go .* occurs 0 times"):
        build.patched_source(components.KUBERNETES, patch, "moved upstream")
    with pytest.raises(DevError, match="occurs 2 times"):
        build.patched_source(components.KUBERNETES, patch, patch.old + patch.old)


def test_a_patched_build_has_a_cache_key_of_its_own() -> None:
    assert components.KUBERNETES.key.startswith("kubernetes-v1.36.3-patched-")
    assert components.KUBECTL.key.startswith("kubectl-v1.36.3-") and "patched" not in components.KUBECTL.key


def test_the_cache_key_changes_with_the_ldflags() -> None:
    assert components.ETCD.key == "etcd-v3.6.16"  # no ldflags, no patches: the version alone
    helm = components.HELM
    assert helm.key.startswith("helm-v3.22.0-")
    assert replace(helm, ldflags=lambda version: [f"-X helm.sh/helm/v3/internal/version.version={version}"]).key \
        not in {helm.key, "helm-v3.22.0"}


def test_keda_is_built_on_demand_only_and_its_toolchain_is_part_of_its_key() -> None:
    assert components.KEDA not in components.ALL and components.KEDA not in components.CONTROL_PLANE
    assert components.KEDA.key.startswith(f"keda-{components.KEDA_VERSION}-")
    assert replace(components.KEDA, toolchain="local").key != components.KEDA.key


def test_a_module_copy_links_the_sources_and_writes_go_mod_and_go_sum_anew(tmp_path: Path) -> None:
    module = tmp_path / "cache" / "example.com" / "m@v1.0.0"
    (module / "cmd").mkdir(parents=True)
    for name, text in {"go.mod": "module example.com/m\n", "go.sum": "", "cmd/main.go": "package main\n"}.items():
        (module / name).write_text(text)
    module.chmod(0o555)  # as in Go's module cache
    copy = build.module_copy(components.KEDA, module, tmp_path / "work")
    assert (copy / "cmd" / "main.go").stat().st_ino == (module / "cmd" / "main.go").stat().st_ino
    for name in ("go.mod", "go.sum"):
        assert (copy / name).read_text() == (module / name).read_text()
        assert (copy / name).stat().st_ino != (module / name).stat().st_ino
