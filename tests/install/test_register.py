"""``token-projector register``: the object it builds, field by field, and its errors before and at the cluster."""

import base64
from pathlib import Path

import pytest

from tests.tls_material import free_port, make_certs
from webhook.cli import main
from webhook.core.contract import Contract
from webhook.errors import ConfigError
from webhook.install.deployment import CA_FILE, CERT_FILE, KEY_FILE
from webhook.install.registration import check_url, is_up_to_date, read_ca_bundle, webhook_configuration


def test_the_service_form_calls_the_in_cluster_service_with_our_ca() -> None:
    built = webhook_configuration(ca_bundle="Q0E=", contract=Contract())
    assert built["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert built["kind"] == "MutatingWebhookConfiguration"
    assert built["metadata"]["name"] == "token-projector"
    webhook = built["webhooks"][0]
    assert webhook["clientConfig"] == {
        "caBundle": "Q0E=",
        "service": {"name": "token-projector", "namespace": "token-projector", "path": "/mutate", "port": 443},
    }
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    assert webhook["rules"][0]["resources"] == ["pods"]
    assert webhook["matchConditions"][0]["expression"] == (
        "has(object.metadata.annotations) && ['token-projector.io/audience', 'token-projector.io/protect-port', "
        "'token-projector.io/protect-audience', 'token-projector.io/protect-allow']"
        ".exists(k, k in object.metadata.annotations)"
    )


def test_the_url_form_calls_the_url_and_has_no_service() -> None:
    webhook = webhook_configuration(ca_bundle="Q0E=", contract=Contract(), url="https://10.0.0.5:8443/mutate")[
        "webhooks"
    ][0]
    assert webhook["clientConfig"] == {"caBundle": "Q0E=", "url": "https://10.0.0.5:8443/mutate"}


def test_another_namespace_is_excluded_instead_of_the_default_one() -> None:
    webhook = webhook_configuration(ca_bundle="", contract=Contract(), namespace="security")["webhooks"][0]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "security"]
    assert webhook["clientConfig"]["service"]["namespace"] == "security"


def test_a_custom_annotation_prefix_is_what_the_match_condition_looks_for() -> None:
    webhook = webhook_configuration(ca_bundle="", contract=Contract(annotation_prefix="tokens.example.com"))[
        "webhooks"
    ][0]
    expression = webhook["matchConditions"][0]["expression"]
    assert "['tokens.example.com/audience', 'tokens.example.com/protect-port', " in expression


def test_an_object_with_the_api_servers_defaults_added_is_up_to_date() -> None:
    desired = webhook_configuration(ca_bundle="Q0E=", contract=Contract())
    existing = webhook_configuration(ca_bundle="Q0E=", contract=Contract())
    existing["metadata"].update({"resourceVersion": "42", "uid": "u", "generation": 1})
    existing["webhooks"][0]["someNewDefault"] = True
    assert is_up_to_date(existing, desired)
    existing["webhooks"][0]["clientConfig"]["caBundle"] = "T0xE"
    assert not is_up_to_date(existing, desired)
    existing["webhooks"][0]["clientConfig"]["caBundle"] = "Q0E="
    existing["webhooks"].append(dict(existing["webhooks"][0]))
    assert not is_up_to_date(existing, desired)


def test_the_ca_bundle_is_the_base64_of_the_ca_file(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    assert base64.b64decode(read_ca_bundle(certs / CA_FILE)) == (certs / CA_FILE).read_bytes()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.crt", "No such file or directory; make one with `token-projector certs`"),
        (KEY_FILE, "is not a PEM CA certificate"),
        (CERT_FILE, "is a certificate but not a CA"),
    ],
)
def test_a_missing_or_wrong_ca_file_is_refused_before_the_cluster_is_contacted(
    tmp_path: Path, name: str, message: str
) -> None:
    make_certs(tmp_path)
    with pytest.raises(ConfigError, match=message):
        read_ca_bundle(tmp_path / name)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/mutate",
        "10.0.0.5:8443",
        "https:///mutate",
        "https://u:p@host/mutate",
        "https://host/mutate?x=1",
    ],
)
def test_a_url_the_api_server_would_refuse_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        check_url(url)


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
    )
    return path


def test_an_unreachable_cluster_is_a_clear_error_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certs(tmp_path / "certs")
    server = f"https://127.0.0.1:{free_port()}"
    code = main(["register", "--ca-file", str(certs / CA_FILE), "--kubeconfig", str(kubeconfig(tmp_path, server))])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Kubernetes API at {server}" in err
    assert "Connection refused" in err
    assert "not-a-real-token" not in err


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = make_certs(tmp_path / "certs")
    code = main(["register", "--ca-file", str(certs / CA_FILE), "--kubeconfig", str(tmp_path / "none")])
    assert code == 2
    assert "no usable Kubernetes configuration" in capsys.readouterr().err
