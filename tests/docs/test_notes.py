"""The chart's install notes print the next commands with the release's own names: the gateway's
Service and port, how to make a key when none is configured, and a call through the gateway.
`helm install --dry-run` renders them against the local control plane (helm asks it for its version)."""

from __future__ import annotations

from typing import Any

from tests.chart.helm import CHART, Helm
from tests.chart.test_install import crds_installed  # noqa: F401 - the chart's CRDs, which helm maps kinds with
from tests.conftest import Cluster


def notes(helm: Helm, cluster: Cluster, values: dict[str, Any]) -> str:
    result = helm.with_values("install", "fleet", str(CHART), "--namespace", "ops", "--dry-run=client",
                              values=values, kubeconfig=cluster.kubeconfig)
    return result.stdout.split("NOTES:", 1)[1]


def test_with_the_gateway_and_no_key_the_notes_make_one_and_call_it(
    helm: Helm, cluster: Cluster, crds_installed: None,  # noqa: F811
) -> None:
    text = notes(helm, cluster, {"gateway": {"enabled": True}})
    assert "answers 401" in text
    assert 'HASH=$(printf %s "$KEY" | sha256sum | cut -d\' \' -f1)' in text
    assert "helm upgrade fleet CHART -n ops --reuse-values" in text
    assert "kubectl -n ops port-forward service/fleet-imagefleet-gateway 8080:80" in text
    assert '-H "Authorization: Bearer $KEY"' in text
    assert '"model": "tiny"' in text


def test_with_keys_configured_the_notes_only_call(
    helm: Helm, cluster: Cluster, crds_installed: None,  # noqa: F811
) -> None:
    key = {"name": "me", "sha256": "0" * 64}
    text = notes(helm, cluster, {"gateway": {"enabled": True, "service": {"port": 8000}, "apiKeys": {"keys": [key]}}})
    assert "answers 401" not in text and "sha256sum" not in text
    assert "port-forward service/fleet-imagefleet-gateway 8080:8000" in text
    assert "KEY=...   # one of your keys" in text


def test_without_the_gateway_the_notes_say_how_to_turn_it_on(
    helm: Helm, cluster: Cluster, crds_installed: None,  # noqa: F811
) -> None:
    text = notes(helm, cluster, {})
    assert "--set gateway.enabled=true" in text
    assert "port-forward service/fleet-imagefleet-gateway" not in text
