"""KEDA on the local control plane (`imagefleet dev up --with-keda`): what to run and register.

KEDA's operator and its metrics API server run as local processes, like the rest of the
control plane, from binaries built from KEDA's Go module (components.KEDA). The operator
serves the metrics server over gRPC with mutual TLS, both sides holding one certificate as
KEDA's own certificate rotation makes it. The metrics server serves external.metrics.k8s.io,
registered as an APIService; the API server's aggregation layer reaches it through a Service
of type ExternalName (localhost, so no kube-proxy is needed) and checks its serving
certificate against the APIService's caBundle, as in a cluster. kube-controller-manager's
HPA controller then reads KEDA's metrics through the API server as it does anywhere.

Both processes run as cluster admin (system:masters), as KWOK and the node agent do here;
KEDA installed from its manifests runs under its own RBAC instead.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

from .pki import CertificateAuthority
from .processes import HOST

NAMESPACE = "keda"
OPERATOR = "keda-operator"
METRICS_SERVER = "keda-metrics-apiserver"
API_GROUP = "external.metrics.k8s.io"
API_VERSION = "v1beta1"
API_SERVICE = f"{API_VERSION}.{API_GROUP}"
# The port names in ControlPlane.ports.
OPERATOR_PORTS = ("keda-operator-grpc", "keda-operator-metrics", "keda-operator-health")
METRICS_SERVER_PORTS = ("keda-metrics-apiserver", "keda-metrics-apiserver-metrics")


def write_certs(ca: CertificateAuthority, cert_dir: Path) -> Path:
    """KEDA's certificate directory (ca.crt, tls.crt, tls.key, the names KEDA reads), signed by `ca`.

    One certificate serves the operator's gRPC, the metrics API server's HTTPS (under the
    Service name the aggregation layer checks) and the metrics server's gRPC client.
    """
    names = (HOST, "localhost", f"{METRICS_SERVER}.{NAMESPACE}.svc", f"{OPERATOR}.{NAMESPACE}.svc")
    pair = ca.issue("keda-tls", "keda", server_names=names, client_too=True)
    cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.pair.cert, cert_dir / "ca.crt")
    shutil.copyfile(pair.cert, cert_dir / "tls.crt")
    shutil.copyfile(pair.key, cert_dir / "tls.key")
    (cert_dir / "tls.key").chmod(0o600)
    return cert_dir


def environment(kubeconfig: Path) -> dict[str, str]:
    """What KEDA's manifests give both containers: every namespace watched, its own namespace."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
    }


def operator_argv(binary: Path, cert_dir: Path, ports: dict[str, int]) -> list[str]:
    """KEDA's manager container's flags, less leader election and certificate rotation, on loopback ports."""
    grpc, metrics, health = (ports[name] for name in OPERATOR_PORTS)
    return [
        str(binary),
        f"--metrics-service-bind-address={HOST}:{grpc}",
        f"--metrics-bind-address={HOST}:{metrics}",
        f"--health-probe-bind-address={HOST}:{health}",
        f"--cert-dir={cert_dir}",
        f"--ca-dir={cert_dir}",
        "--zap-log-level=info",
        "--zap-encoder=console",
        "--zap-time-encoding=rfc3339",
    ]


def metrics_server_argv(binary: Path, cert_dir: Path, kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    """KEDA's metrics API server container's flags, with the kubeconfigs a pod gets in-cluster."""
    serving, metrics = (ports[name] for name in METRICS_SERVER_PORTS)
    return [
        str(binary),
        f"--bind-address={HOST}",
        f"--secure-port={serving}",
        f"--port={metrics}",
        f"--client-ca-file={cert_dir / 'ca.crt'}",
        f"--tls-cert-file={cert_dir / 'tls.crt'}",
        f"--tls-private-key-file={cert_dir / 'tls.key'}",
        f"--cert-dir={cert_dir}",
        f"--metrics-service-address={HOST}:{ports[OPERATOR_PORTS[0]]}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--lister-kubeconfig={kubeconfig}",
        "--zap-log-level=info",
    ]


def api_objects(ca: Path, metrics_server_port: int) -> list[dict[str, Any]]:
    """The namespace, the Service the aggregation layer resolves, and the APIService."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVER, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE},
            "spec": {
                "service": {"name": METRICS_SERVER, "namespace": NAMESPACE, "port": metrics_server_port},
                "group": API_GROUP,
                "version": API_VERSION,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": base64.b64encode(ca.read_bytes()).decode(),
            },
        },
    ]
