"""A kubeconfig holding a ServiceAccount's token (TokenRequest API): to act exactly as the chart's operator."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client


def service_account_kubeconfig(
    api_client: client.ApiClient, admin_kubeconfig: Path, namespace: str, service_account: str, path: Path
) -> Path:
    """Write a kubeconfig for `namespace/service_account` to `path`: same server and CA as the admin's."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, request
    ).status.token
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    server = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in server:  # make a relative CA path absolute
        server["certificate-authority"] = str((admin_kubeconfig.parent / server["certificate-authority"]).resolve())
    user = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": user}}],
        "current-context": "operator",
    }))
    path.chmod(0o600)
    return path
