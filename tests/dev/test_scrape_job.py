"""The scrape job the docs give users is the one the local Prometheus runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from imagefleet.dev.prometheus import runtime_pods_job

ROOT = Path(__file__).resolve().parents[2]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def documented_jobs() -> list[tuple[str, Any]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in YAML_BLOCK.findall(page.read_text()):
            if "job_name: imagefleet-runtime" in block:
                document = yaml.safe_load(block)
                found.append((str(page.relative_to(ROOT)), document[0] if isinstance(document, list) else document))
    return found


def test_every_documented_runtime_scrape_job_is_the_one_the_local_prometheus_runs() -> None:
    jobs = documented_jobs()
    assert jobs, "no documented imagefleet-runtime scrape job"
    for page, job in jobs:
        assert job == runtime_pods_job(), page


def test_the_job_keeps_annotated_imagefleet_pods_and_labels_them_for_the_autoscaler() -> None:
    job = runtime_pods_job()
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert {"namespace", "imagefleet_io_name", "pod", "__address__", "__metrics_path__"} <= targets
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
