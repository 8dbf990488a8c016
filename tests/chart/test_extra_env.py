"""`extraEnv` passes more IMAGEFLEET_* settings to the operator; the ones the chart sets itself are refused."""

from __future__ import annotations

from .helm import Helm, one


def test_extra_env_reaches_the_operator_container(helm: Helm) -> None:
    documents = helm.template(values={"extraEnv": [{"name": "IMAGEFLEET_KUBE_WRITE_QPS", "value": "100"}]})
    (container,) = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "IMAGEFLEET_KUBE_WRITE_QPS", "value": "100"} in container["env"]


def test_extra_env_may_not_override_what_the_chart_sets(helm: Helm) -> None:
    rendered = helm.render(values={"extraEnv": [{"name": "IMAGEFLEET_PROMETHEUS_URL", "value": "http://x:9090"}]},
                           check=False)
    assert "/extraEnv/0/name" in rendered
