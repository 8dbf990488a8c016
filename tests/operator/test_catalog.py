"""The model and GPU class catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet.catalog import MODEL_NAMES, CatalogError, load_gpu_classes, model_catalog, parse_gpu_classes

BUILT_IN_CLASSES = ["cpu", "t4-16gb", "l4-24gb", "a100-80gb", "h100-80gb", "h200-141gb"]
# What the simulated fleet labels its nodes with (NVIDIA GPU feature discovery).
GFD_PRODUCTS = {
    "t4-16gb": ("Tesla-T4", 15360), "l4-24gb": ("NVIDIA-L4", 23034),
    "a100-80gb": ("NVIDIA-A100-SXM4-80GB", 81920), "h100-80gb": ("NVIDIA-H100-80GB-HBM3", 81559),
    "h200-141gb": ("NVIDIA-H200", 143771),
}


def test_model_catalog_has_every_built_in_model_with_components() -> None:
    catalog = model_catalog()
    assert tuple(catalog) == MODEL_NAMES
    assert set(catalog["sdxl"].components) == {"unet", "text_encoder", "text_encoder_2", "vae"}
    assert "transformer" in catalog["flux1-dev"].components and "text_encoder_3" in catalog["sd35-large"].components
    assert catalog["tiny"].repo_id is None
    assert catalog["flux1-dev"].parameters_billions > catalog["sd35-large"].parameters_billions > 12
    for model in catalog.values():
        assert model.defaults.width <= model.defaults.max_width


def test_built_in_gpu_classes_match_the_simulated_fleet() -> None:
    classes = load_gpu_classes()
    assert list(classes) == BUILT_IN_CLASSES
    for name, (product, memory) in GFD_PRODUCTS.items():
        gpu_class = classes[name]
        assert gpu_class.node_selector == {"nvidia.com/gpu.product": product}
        assert gpu_class.memory_mib == memory and gpu_class.gpu_resource == "nvidia.com/gpu"
        assert gpu_class.tolerations[0]["key"] == "nvidia.com/gpu"
    cpu = classes["cpu"]
    assert cpu.gpu_resource is None and not cpu.tolerations and cpu.node_selector == {"kubernetes.io/os": "linux"}


def test_bf16_only_on_ampere_and_newer() -> None:
    classes = load_gpu_classes()
    assert "bf16" not in classes["t4-16gb"].precisions
    assert all("bf16" in classes[name].precisions for name in ("l4-24gb", "a100-80gb", "h100-80gb", "h200-141gb"))


def test_catalog_file_replaces_the_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "classes.yaml"
    path.write_text(
        "classes:\n"
        "  - {name: v100-32gb, device: cuda, memoryMiB: 32768, precisions: [fp32, fp16],\n"
        "     gpuResource: nvidia.com/gpu, nodeSelector: {nvidia.com/gpu.product: Tesla-V100-SXM2-32GB}}\n"
    )
    classes = load_gpu_classes(path)
    assert list(classes) == ["v100-32gb"] and classes["v100-32gb"].gpus_per_replica == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("classes: []", "classes"),
        ("classes:\n  - {name: x, device: tpu, memoryMiB: 1, precisions: [fp32]}", "device"),
        ("classes:\n  - {name: x, device: cpu, memoryMiB: 0, precisions: [fp32]}", "memoryMiB"),
        ("classes:\n  - {name: x, device: cpu, memoryMiB: 1, precisions: [fp8]}", "precisions"),
        ("classes:\n  - {name: x, device: cpu, memoryMiB: 1, precisions: [fp32], resources: {claims: {}}}",
         "requests"),
        ("classes:\n  - {name: x, device: cpu, memoryMiB: 1, precisions: [fp32]}\n"
         "  - {name: x, device: cpu, memoryMiB: 2, precisions: [fp32]}", "more than once"),
        ("classes: [", "invalid"),
    ],
)
def test_bad_catalogs_are_rejected_with_the_problem(text: str, needle: str) -> None:
    with pytest.raises(CatalogError) as error:
        parse_gpu_classes(text, "test.yaml")
    assert "test.yaml" in str(error.value) and needle in str(error.value)


def test_missing_catalog_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="missing.yaml"):
        load_gpu_classes(tmp_path / "missing.yaml")
