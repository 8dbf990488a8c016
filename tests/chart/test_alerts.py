"""imagefleet's alerts: promtool checks and unit-tests the rule file, every alert fires and stays
quiet in its tests, each has a runbook, and the chart's PrometheusRule (and ServiceMonitors) are
accepted by the real prometheus-operator CRDs in the local API server."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefleet.dev.build import binary_dir, ensure_built
from imagefleet.dev.components import PROMETHEUS_OPERATOR_CRDS
from tests.conftest import Cluster
from tests.docs.test_links import anchors

from .helm import CHART, ROOT, Helm, by_kind, kubectl, one

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: apt-get install prometheus (Debian's package)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_expression_fails_promtool(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES.read_text().replace("> 0.8", "> > 0.8", 1))
    checked = promtool("check", "rules", str(broken))
    assert checked.returncode != 0 and "ImagefleetQueueNearBound" in checked.stdout + checked.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", ())]
    for alert in alerts():
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert["alert"]]
        assert True in outcomes, f"{alert['alert']} is never tested firing"
        assert False in outcomes, f"{alert['alert']} is never tested not firing"


def test_every_alert_has_a_runbook_section() -> None:
    sections = anchors(OPERATIONS.read_text())
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.endswith(f"docs/operations.md#{alert['alert'].lower()}"), url
        assert alert["alert"].lower() in sections, f"docs/operations.md has no section {alert['alert']}"


def test_chart_includes_the_rule_file_verbatim(helm: Helm) -> None:
    assert not by_kind(helm.template(), "PrometheusRule")
    rule = one(helm.template(values={"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}),
               "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Cluster) -> None:
    """The ServiceMonitor and PrometheusRule CRDs of prometheus-operator's own module."""
    ensure_built([PROMETHEUS_OPERATOR_CRDS])
    kubectl("apply", "--server-side", "-f", str(binary_dir(PROMETHEUS_OPERATOR_CRDS) / "crds.yaml"),
            kubeconfig=cluster.kubeconfig)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com", kubeconfig=cluster.kubeconfig)


def test_monitoring_objects_are_accepted_by_the_prometheus_operator_crds(
    helm: Helm, cluster: Cluster, namespace: str, monitoring_crds: None
) -> None:
    values = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    documents = helm.template("--namespace", namespace, values=values)
    monitoring = [doc for doc in documents if doc["kind"] in {"ServiceMonitor", "PrometheusRule"}]
    assert sorted(doc["kind"] for doc in monitoring) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    created = kubectl("create", "-f", "-", "-o", "name", kubeconfig=cluster.kubeconfig,
                      stdin=yaml.safe_dump_all(monitoring))
    assert len(created.stdout.split()) == 3, created.stdout
    stored = yaml.safe_load(kubectl("get", "prometheusrules", "-n", namespace, "-o", "yaml",
                                    kubeconfig=cluster.kubeconfig).stdout)["items"]
    assert stored[0]["spec"] == yaml.safe_load(RULES.read_text())
    # The CRD's schema is real: a misspelled field is refused, not silently kept.
    bad = {**monitoring[0], "metadata": {"name": "bad-" + uuid.uuid4().hex[:5], "namespace": namespace},
           "spec": {**monitoring[0]["spec"], "endpointz": []}}
    refused = kubectl("create", "--validate=strict", "-f", "-", kubeconfig=cluster.kubeconfig,
                      stdin=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0 and "endpointz" in refused.stderr, refused.stderr
