"""Every YAML block in README.md and docs/ is something the code accepts: each ImageModelDeployment
validates and fits its GPU class (unless its block says it is refused), Helm values render with
the chart's schema, scrape settings are the local Prometheus's. The dry run of every Kubernetes
object against the API server is in test_yaml_blocks_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imagefleet import KIND
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.dev.prometheus import runtime_pods_job
from imagefleet.fit import check_fit
from imagefleet.gateway.auth import KeysFile
from imagefleet.resolve import resolve
from tests.chart.helm import Helm

from .yaml_blocks import Block, blocks, kind_of, objects

BLOCKS = blocks()


def _of_kind(*kinds: str) -> list[Block]:
    return [block for block in BLOCKS if kind_of(block) in kinds]


def _ids(block: Block) -> str:
    return block.where


def test_every_block_is_of_a_kind_the_tests_check() -> None:
    assert BLOCKS, "no YAML block found"
    assert [block.where for block in BLOCKS if kind_of(block) is None] == []


def test_the_classifier_tells_blocks_apart(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```yaml\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n```\n"
        "```yaml\nspec:\n  tier: bulk\n```\n"
        "```yaml\ngateway:\n  enabled: true\n```\n"
        "```yaml\njob_name: x\n```\n"
        "```yaml\nrelabel_configs: []\n```\n"
        "```yaml\nkeys: []\n```\n"
        "```yaml\nsomething: else\n```\n"
        "```yml\n- a list\n```\n"
        "1. item\n\n   ```yaml\n   gpuClasses: {}\n   ```\n"
    )
    assert [kind_of(block) for block in blocks([page])] == [
        "objects", "spec", "values", "scrape-job", "relabel", "gateway-keys", None, None, "values"
    ]


IMDS = [(block, document) for block in _of_kind("objects", "spec") for document in objects(block)
        if document["kind"] == KIND]


def test_the_pages_show_image_model_deployments() -> None:
    assert {block.page.name for block, _ in IMDS} >= {"README.md", "concepts.md", "model-cache.md"}


@pytest.mark.parametrize(("block", "document"), IMDS, ids=[f"{block.where}:{doc['metadata']['name']}"
                                                          for block, doc in IMDS])
def test_every_image_model_deployment_fits_unless_its_block_says_it_is_refused(
    block: Block, document: dict[str, object]
) -> None:
    spec = ImageModelDeploymentSpec.model_validate(document["spec"])
    classes = load_gpu_classes()
    fit = check_fit(resolve(spec, classes), classes)
    assert fit.status == ("False" if block.expects_refusal else "True"), fit.message



@pytest.mark.parametrize("block", _of_kind("values"), ids=_ids)
def test_every_values_block_renders_with_the_charts_schema(helm: Helm, block: Block) -> None:
    (values,) = block.documents
    rendered = helm.template(values=values)
    assert rendered, f"{block.where}: helm template rendered nothing"


@pytest.mark.parametrize("block", _of_kind("scrape-job"), ids=_ids)
def test_every_scrape_job_is_the_local_prometheus_one(block: Block) -> None:
    assert block.documents == (runtime_pods_job(),)


@pytest.mark.parametrize("block", _of_kind("relabel"), ids=_ids)
def test_every_relabeling_is_one_of_the_scrape_jobs(block: Block) -> None:
    (document,) = block.documents
    job = runtime_pods_job()
    assert document["relabel_configs"], block.where
    for rule in document["relabel_configs"]:
        assert rule in job["relabel_configs"], f"{block.where}: {yaml.safe_dump(rule)}"


@pytest.mark.parametrize("block", _of_kind("gateway-keys"), ids=_ids)
def test_every_keys_file_is_one_the_gateway_reads(block: Block) -> None:
    (document,) = block.documents
    assert KeysFile.model_validate(document).keys, f"{block.where}: no key"
