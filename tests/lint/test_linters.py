"""The linters a platform team runs in its pipeline, over the rendered chart, the examples and the
operator's Deployment and Service: `kubeconform -strict` against the cluster's own API and the
CRDs, and `kube-score` with every deliberate exception in kube-score-ignores.yaml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from imagefleet.dev.build import binary_dir, ensure_built
from imagefleet.dev.components import HELM, KUBE_SCORE, KUBECONFORM, PROMETHEUS_OPERATOR_CRDS

from .manifests import CHART_VALUES, EXAMPLES, ROOT, operator_output
from .schemas import LOCATION_TEMPLATE, crd_schemas, kubernetes_module_dir, kubernetes_schemas, write_schemas

IGNORES = Path(__file__).with_name("kube-score-ignores.yaml")
CRD_FILES = [ROOT / "crds" / "imagemodeldeployment.yaml", ROOT / "charts" / "imagefleet" / "crds" / "kopf-peering.yaml"]


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    return ensure_built([HELM, KUBECONFORM, KUBE_SCORE, PROMETHEUS_OPERATOR_CRDS],
                        progress=lambda message: print(f"[linters] {message}"))


@pytest.fixture(scope="module")
def manifests(tools: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The files to lint: the chart rendered with values that use every template, the examples,
    and the operator's runtime Deployment and Service for each example."""
    directory = tmp_path_factory.mktemp("manifests")
    files = []
    for name, values in CHART_VALUES.items():
        values_file = directory / f"{name}.values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        rendered = subprocess.run(
            [str(tools["helm"]), "template", "imagefleet", str(ROOT / "charts" / "imagefleet"), "--namespace",
             "imagefleet", "-f", str(values_file)], capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        (directory / f"{name}.yaml").write_text(rendered)
        files.append(directory / f"{name}.yaml")
    (directory / "operator-output.yaml").write_text(yaml.safe_dump_all(operator_output()))
    return [*files, *EXAMPLES, directory / "operator-output.yaml"]


@pytest.fixture(scope="module")
def schema_dir(tools: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    crds = [
        document
        for path in [*CRD_FILES, binary_dir(PROMETHEUS_OPERATOR_CRDS) / "crds.yaml"]
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    directory = tmp_path_factory.mktemp("schemas")
    write_schemas(directory, {**kubernetes_schemas(kubernetes_module_dir()), **crd_schemas(crds)})
    return directory


def kubeconform(tools: dict[str, Path], schema_dir: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools["kubeconform"]), "-strict", "-summary", "-schema-location", f"{schema_dir}/{LOCATION_TEMPLATE}",
         *map(str, files)], capture_output=True, text=True, timeout=120,
    )


def test_kubeconform_strict_finds_nothing(tools: dict[str, Path], schema_dir: Path, manifests: list[Path]) -> None:
    result = kubeconform(tools, schema_dir, *manifests)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {document["kind"] for path in manifests for document in yaml.safe_load_all(path.read_text()) if document}
    assert {"Deployment", "Service", "ImageModelDeployment", "ServiceMonitor", "PrometheusRule", "ClusterKopfPeering",
            "KopfPeering", "ConfigMap", "ClusterRole", "Role"} <= kinds
    assert "Skipped: 0" in result.stdout and "Errors: 0" in result.stdout


def test_kubeconform_catches_an_unknown_field_and_a_wrong_type(
    tools: dict[str, Path], schema_dir: Path, tmp_path: Path
) -> None:
    """The schemas are strict: a misspelled field of a CRD and of the core API both fail."""
    example = next(yaml.safe_load_all(EXAMPLES[0].read_text()))
    example["spec"]["autoscalling"] = {}
    deployment = next(d for d in operator_output() if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([example, deployment]))
    result = kubeconform(tools, schema_dir, bad)
    assert result.returncode != 0
    assert "autoscalling" in result.stdout and "replicas" in result.stdout, result.stdout


def test_kube_score_finds_nothing_beyond_the_documented_exceptions(
    tools: dict[str, Path], manifests: list[Path]
) -> None:
    ignores = yaml.safe_load(IGNORES.read_text())
    assert all(isinstance(reason, str) and len(reason) > 20 for reason in ignores.values())
    result = subprocess.run(
        [str(tools["kube-score"]), "score", "--output-format", "ci", "--exit-one-on-warning",
         *(f"--ignore-test={check}" for check in ignores), *map(str, manifests)],
        capture_output=True, text=True, timeout=120,
    )
    findings = [line for line in result.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert findings == [] and result.returncode == 0, "\n".join(findings) + result.stderr
    # Each exception is still needed: without it, kube-score reports its check.
    unignored = subprocess.run(
        [str(tools["kube-score"]), "score", "--output-format", "json", *map(str, manifests)],
        capture_output=True, text=True, timeout=120,
    )
    failing = {
        check["check"]["id"]
        for scored in yaml.safe_load(unignored.stdout)
        for check in scored["checks"]
        if check["grade"] < 10 and not check["skipped"]
    }
    assert set(ignores) <= failing, f"exceptions no longer needed: {set(ignores) - failing}"
