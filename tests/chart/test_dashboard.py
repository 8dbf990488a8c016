"""The Grafana dashboard: shipped in the chart for the sidecar, and every panel's PromQL returns
data from a real Prometheus scraping a real runtime under load and the operator's /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from imagefleet.bench.load import Plan, request_body, run_load
from imagefleet.demo.runtimes import start_runtime
from imagefleet.dev.processes import HOST
from imagefleet.dev.prometheus import LocalPrometheus, Target
from imagefleet.resource_metrics import ResourceCollector
from tests.helpers import wait_until

from .helm import CHART, Helm, one

DASHBOARD = CHART / "files" / "dashboard.json"
NAMESPACE, NAME = "team-a", "renders"
LOAD_SECONDS = 10.0


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every query, with each template variable set to its 'All' value."""
    variables = {v["name"]: v.get("allValue", "") for v in dashboard()["templating"]["list"] if v["type"] == "query"}
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", ()):
            expr = re.sub(r"\$(\w+)", lambda match: variables[match.group(1)], target["expr"])
            queries.append((panel["title"], expr))
    return queries


def test_dashboard_ships_in_a_configmap_for_the_grafana_sidecar(helm: Helm) -> None:
    assert not [doc for doc in helm.template() if doc["kind"] == "ConfigMap" and "grafana_dashboard" in
                doc["metadata"]["labels"]]
    documents = helm.template(values={"grafanaDashboard": {"enabled": True}})
    (configmap,) = [doc for doc in documents if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["imagefleet.json"]) == dashboard()
    assert one(documents, "Deployment")


def test_every_panel_has_a_query_and_a_description() -> None:
    panels = dashboard()["panels"]
    assert [p["title"] for p in panels if not p.get("targets")] == []
    assert all(p["description"] for p in panels)
    titles = " ".join(p["title"] for p in panels)
    for topic in ("Requests/s", "Images/min", "p95", "Queue", "Batch", "Replicas", "Autoscaler", "429", "GPU memory"):
        assert topic in titles


def variable_queries() -> list[tuple[str, str]]:
    """(series selector, label) of every `label_values(selector, label)` template variable."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable
            found.append((re.sub(r'\{.*\}', "", match.group(1)), match.group(2)))
    return found


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[LocalPrometheus]:
    server = LocalPrometheus(tmp_path / "prometheus", scrape_interval="1s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator_metrics() -> Iterator[str]:
    """The operator's collector, serving one autoscaled resource as the API server returns it."""
    collector = ResourceCollector()
    collector.update({
        "metadata": {"namespace": NAMESPACE, "name": NAME},
        "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "standard", "autoscaling": {"enabled": True}},
        "status": {
            "desiredReplicas": 1, "readyReplicas": 1,
            "conditions": [
                {"type": "Scaling", "status": "False", "reason": "Steady", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        },
    })
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(0, addr=HOST, registry=registry)
    try:
        yield f"{HOST}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def query(prometheus: LocalPrometheus, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_panel_query_returns_data_under_load(
    prometheus: LocalPrometheus, operator_metrics: str, tmp_path: Path
) -> None:
    runtime = start_runtime(tmp_path / "runtime.log", settings={"IMAGEFLEET_MAX_BATCH_SIZE": "4"})
    try:
        runtime.wait_ready()
        prometheus.set_targets([
            Target(runtime.metrics_address, {"namespace": NAMESPACE, "imagefleet_io_name": NAME}),
            Target(operator_metrics),  # the operator's series carry their own namespace and name
        ])
        wait_until(lambda: len(query(prometheus, "up == 1")) == 2, timeout=30, message="both targets scraped")
        body = request_body(prompt="a lighthouse at dusk", size="64x64", steps=2)
        run = asyncio.run(run_load(runtime.url, body, Plan(concurrency=4, duration_s=LOAD_SECONDS)))
        print(f"load: {len(run.records)} requests in {LOAD_SECONDS:.0f} s against the tiny model on CPU")
        empty: dict[str, str] = {}
        for title, expr in panel_queries():
            try:
                wait_until(lambda expr=expr: query(prometheus, expr), timeout=20, message=f"data for {title}")
            except AssertionError:
                empty[title] = expr
        assert empty == {}, "panels without data: " + json.dumps(empty, indent=1)
        for selector, label in variable_queries():
            assert [s for s in query(prometheus, selector) if s["metric"].get(label)], f"no values for ${label}"
    finally:
        runtime.stop()
