"""The chart's three certificate modes: cert-manager, Helm-generated, and your own Secret with its CA."""

import base64
import datetime
import http.client
import json
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.manifests.chart import NAMESPACE, of_kind, one, template, template_error, values_file
from tests.manifests.conftest import Render
from tests.manifests.served import annotated_review, serving
from webhook.core.wire import Json
from webhook.install.certs import CertRequest

SERVICE_HOST = f"token-projector.{NAMESPACE}.svc"


def ca_bundle(objects: list[Json]) -> str | None:
    bundle: str | None = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"].get("caBundle")
    return bundle


def tls_volume(objects: list[Json]) -> Json:
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    volume: Json = next(v for v in volumes if v["name"] == "tls")
    return volume


def secret_data(objects: list[Json], name: str) -> dict[str, bytes]:
    secret = one(objects, "Secret", name)
    assert secret["type"] == "kubernetes.io/tls"
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def test_cert_manager_mode_makes_the_kustomize_overlays_issuers_and_certificates(render: Render) -> None:
    chart = template(*values_file("cert-manager"))
    overlay = render("overlays/cert-manager")
    for kind in ("Issuer", "Certificate"):
        assert {o["metadata"]["name"]: o["spec"] for o in of_kind(chart, kind)} == {
            o["metadata"]["name"]: o["spec"] for o in of_kind(overlay, kind)
        }
    annotation = "cert-manager.io/inject-ca-from"
    webhook = one(chart, "MutatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"][annotation] == f"{NAMESPACE}/token-projector-ca"
    assert ca_bundle(chart) is None, "cainjector fills it in"
    assert not of_kind(chart, "Secret")


def test_cert_manager_issues_the_secret_the_deployment_mounts_for_the_services_names() -> None:
    objects = template(*values_file("cert-manager"), release="prod", namespace="platform")
    serving_spec = one(objects, "Certificate", "prod-token-projector-serving")["spec"]
    assert tls_volume(objects)["secret"]["secretName"] == serving_spec["secretName"]
    request = CertRequest(out_dir=Path(), service="prod-token-projector", namespace="platform")
    assert serving_spec["dnsNames"] == request.all_dns_names()


def test_cert_manager_mode_with_your_own_issuer_issues_from_it_and_injects_its_ca() -> None:
    objects = template(*values_file("cert-manager-issuer"))
    assert not of_kind(objects, "Issuer")
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "platform-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    annotations = one(objects, "MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{certificate['metadata']['name']}"


def test_auto_mode_uses_cert_manager_only_when_the_cluster_serves_its_api() -> None:
    assert of_kind(template("--api-versions", "cert-manager.io/v1"), "Certificate")
    without = template()
    assert not of_kind(without, "Certificate")
    assert (
        one(without, "Secret", "token-projector-tls")["metadata"]["annotations"]["token-projector.io/certificates"]
        == "helm"
    )


def test_helm_mode_makes_a_ca_and_a_serving_certificate_for_the_service_and_trusts_that_ca() -> None:
    objects = template(*values_file("helm-certificates"))
    ca = secret_data(objects, "token-projector-ca")
    serving_data = secret_data(objects, "token-projector-tls")
    assert tls_volume(objects)["secret"]["secretName"] == "token-projector-tls"
    bundle = ca_bundle(objects)
    assert bundle is not None
    assert base64.b64decode(bundle) == ca["tls.crt"] == serving_data["ca.crt"]

    ca_cert = x509.load_pem_x509_certificate(ca["tls.crt"])
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    chain = x509.load_pem_x509_certificates(serving_data["tls.crt"])
    leaf = chain[0]
    assert chain[1:] == [ca_cert], "the CA is appended, as `token-projector certs` does"
    leaf.verify_directly_issued_by(ca_cert)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == CertRequest(out_dir=Path()).all_dns_names()
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    days = (leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days
    assert days in (89, 90), "ci/helm-certificates-values.yaml asks for 90 days"
    annotations = one(objects, "Secret", "token-projector-tls")["metadata"]["annotations"]
    assert int(annotations["token-projector.io/not-after"]) - int(leaf.not_valid_after_utc.timestamp()) in range(-5, 6)


def test_helm_template_has_no_cluster_to_look_up_so_each_render_makes_new_certificates() -> None:
    first, second = (ca_bundle(template(*values_file("helm-certificates"))) for _ in range(2))
    assert first != second  # `helm upgrade` reuses the release's Secrets: tests/e2e/test_chart_dry_run.py


def test_the_real_server_serves_the_helm_generated_certificate_to_a_client_that_trusts_the_ca_bundle(
    tmp_path: Path,
) -> None:
    objects = template(*values_file("helm-certificates"))
    data = secret_data(objects, "token-projector-tls")
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    (tmp_path / "tls.key").write_bytes(data["tls.key"])
    bundle = ca_bundle(objects)
    assert bundle is not None
    client = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
    body = annotated_review()
    request = (
        f"POST /mutate HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with (
        serving(tmp_path, cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key") as server,
        # As the API server calls it: by the Service's DNS name, trusting the caBundle only.
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls,
    ):
        tls.sendall(request)
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.status == 200
        assert "patch" in json.loads(response.read())["response"]


def test_existing_secret_mode_mounts_your_secret_and_trusts_your_ca() -> None:
    objects = template(*values_file("existing-secret"))
    assert tls_volume(objects)["secret"]["secretName"] == "webhook-serving-tls"
    assert not of_kind(objects, "Secret")
    assert not of_kind(objects, "Certificate")
    bundle = ca_bundle(objects)
    assert bundle is not None
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_existing_secret_mode_without_the_secret_or_its_ca_names_what_is_missing() -> None:
    no_name = template_error("--set", "certificates.mode=secret", "--set", "certificates.secret.caBundle=Zm9v")
    assert "certificates.secret.name is required with certificates.mode=secret" in no_name
    no_ca = template_error("--set", "certificates.mode=secret", "--set", "certificates.secret.name=mine")
    assert "certificates.secret.caBundle is required with certificates.mode=secret" in no_ca
