"""KEDA's certificates and API registration on the local control plane, without starting it."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from imagefleet.dev import keda
from imagefleet.dev.pki import CertificateAuthority


def test_keda_gets_one_certificate_for_serving_and_as_a_client_from_the_clusters_ca(tmp_path: Path) -> None:
    original = CertificateAuthority(tmp_path / "pki")
    cert_dir = keda.write_certs(CertificateAuthority.load(tmp_path / "pki"), tmp_path / "keda-certs")
    assert (cert_dir / "ca.crt").read_bytes() == original.pair.cert.read_bytes()
    cert = x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(original.pair.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The name the aggregation layer checks, and the address the metrics server dials the operator at.
    assert "keda-metrics-apiserver.keda.svc" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_the_api_service_reaches_the_metrics_server_through_an_external_name_and_checks_its_certificate(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority(tmp_path)
    namespace, service, api_service = keda.api_objects(ca.pair.cert, 41234)
    assert namespace["metadata"]["name"] == keda.NAMESPACE
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost"}
    spec = api_service["spec"]
    assert api_service["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert spec["service"] == {"name": service["metadata"]["name"], "namespace": keda.NAMESPACE, "port": 41234}
    assert base64.b64decode(spec["caBundle"]) == ca.pair.cert.read_bytes()
    assert "insecureSkipTLSVerify" not in spec
