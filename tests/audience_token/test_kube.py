"""The reviewer's own credentials: in-cluster by default, or a kubeconfig (token or client certificate)."""

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from audience_token import ConfigError, Credentials, TokenReviewer
from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer, fake_token
from tests.audience_token.tls import Material


def service_account_dir(tmp_path: Path, material: Material) -> tuple[Path, Path]:
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text(OWN_TOKEN + "\n")
    (folder / "ca.crt").write_bytes(material.ca.read_bytes())
    return folder / "token", folder / "ca.crt"


def test_in_cluster_credentials_come_from_the_pods_service_account_and_env(tmp_path: Path, material: Material) -> None:
    token, ca = service_account_dir(tmp_path, material)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    credentials = Credentials.in_cluster(environ=env, token_file=token, ca_file=ca)
    assert credentials.server == "https://10.96.0.1:443"
    assert (credentials.token_file, credentials.ca_file, credentials.token) == (str(token), str(ca), None)
    ipv6 = Credentials.in_cluster(
        environ={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, token_file=token, ca_file=ca
    )
    assert ipv6.server == "https://[fd00::1]:443"


def test_in_cluster_defaults_are_the_kubelets_paths() -> None:
    from audience_token.kube import IN_CLUSTER_CA, IN_CLUSTER_TOKEN

    assert str(IN_CLUSTER_TOKEN) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert str(IN_CLUSTER_CA) == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def test_outside_a_pod_the_error_says_to_pass_a_kubeconfig() -> None:
    with pytest.raises(ConfigError, match=r"not running in a Kubernetes Pod.*kubeconfig"):
        Credentials.in_cluster(environ={})


def test_a_pod_without_its_service_account_token_is_told_about_automount(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConfigError, match="automountServiceAccountToken"):
        Credentials.in_cluster(environ=env, token_file=tmp_path / "token", ca_file=tmp_path / "ca.crt")


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [{"name": "c", "cluster": cluster}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}, {"name": "other", "context": {}}],
        "users": [{"name": "u", "user": user}],
    }


async def test_a_json_kubeconfig_with_a_token_user_needs_no_yaml(
    fake_api: FakeApiServer, tmp_path: Path, material: Material
) -> None:
    path = tmp_path / "kubeconfig.json"
    (tmp_path / "ca.crt").write_bytes(material.ca.read_bytes())
    path.write_text(
        json.dumps(kubeconfig({"server": fake_api.url + "/", "certificate-authority": "ca.crt"}, {"token": OWN_TOKEN}))
    )
    async with TokenReviewer("secret-store", allow="*/*", kubeconfig=path) as reviewer:
        assert (await reviewer.verify(fake_token())).namespace == "api"
    assert "kubeconfig" in repr(reviewer)
    assert OWN_TOKEN not in repr(reviewer)


async def test_a_yaml_kubeconfig_with_inline_client_certificate_data_authenticates_by_mutual_tls(
    tmp_path: Path, material: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the key is loaded from, briefly

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    async with FakeApiServer(material, require_client_cert=True, accepted_bearers=None).running() as api:
        config = kubeconfig(
            {"server": api.url, "certificate-authority-data": data(material.ca)},
            {"client-certificate-data": data(material.client_cert), "client-key-data": data(material.client_key)},
        )
        path = tmp_path / "config"
        path.write_text(yaml.safe_dump(config))
        async with TokenReviewer("secret-store", allow="*/*", kubeconfig=path) as reviewer:
            assert (await reviewer.verify(fake_token())).service_account == "api"
        assert api.bearers_seen == [""], "a certificate user sends no bearer token"
    assert not os.listdir(scratch), "inline key material is not left on disk"


def test_a_token_file_user_is_read_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(kubeconfig({"server": "https://127.0.0.1:6443"}, {"tokenFile": "tok"})))
    credentials = Credentials.from_kubeconfig(path)
    assert credentials.token_file == str(tmp_path / "tok")
    assert "context 'dev'" in credentials.source


@pytest.mark.parametrize(
    ("cluster", "user", "context", "match"),
    [
        ({"server": "http://127.0.0.1:8080"}, {"token": "t"}, None, "must be an https:// URL"),
        ({"server": "https://x", "insecure-skip-tls-verify": True}, {"token": "t"}, None, "insecure-skip-tls-verify"),
        ({"server": "https://x"}, {"exec": {"command": "aws"}}, None, "exec is not supported"),
        ({"server": "https://x"}, {"username": "a", "password": "b"}, None, "password, username is not supported"),
        ({"server": "https://x"}, {}, None, "no token, tokenFile or client certificate"),
        ({"server": "https://x"}, {"client-certificate": "c.crt"}, None, "needs its key"),
        ({"server": "https://x"}, {"client-certificate-data": "%%%", "client-key-data": "a"}, None, "not valid base64"),
        ({"server": "https://x"}, {"token": "t"}, "missing", "no context named 'missing'"),
        ({"server": "https://x"}, {"token": "t"}, "other", "no cluster named None"),
    ],
)
def test_a_kubeconfig_that_cannot_work_is_refused_saying_why(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], context: str | None, match: str
) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(kubeconfig(cluster, user)))
    with pytest.raises(ConfigError, match=match):
        Credentials.from_kubeconfig(path, context=context)


def test_an_unreadable_or_shapeless_kubeconfig_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        Credentials.from_kubeconfig(tmp_path / "missing")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a mapping"):
        Credentials.from_kubeconfig(tmp_path / "list.json")
    (tmp_path / "bad.yaml").write_text("clusters: [unclosed")
    with pytest.raises(ConfigError, match="neither JSON nor YAML"):
        Credentials.from_kubeconfig(tmp_path / "bad.yaml")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ConfigError, match="no current-context"):
        Credentials.from_kubeconfig(tmp_path / "empty.json")


def test_a_yaml_kubeconfig_without_pyyaml_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ConfigError, match=r"audience-token\[kubeconfig\].*kubectl config view --raw"):
        Credentials.from_kubeconfig(path)


def test_an_unloadable_ca_is_a_config_error_naming_the_source(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate")
    credentials = Credentials(server="https://x", source="test source", ca_file=str(tmp_path / "ca.crt"), token="t")
    with pytest.raises(ConfigError, match="cluster CA of test source"):
        TokenReviewer("x", allow="*/*", credentials=credentials)


@pytest.mark.parametrize("server", ["http://10.96.0.1:443", "ftp://x", "http://api.example.com"])
def test_plain_http_to_an_api_server_off_loopback_is_refused(server: str) -> None:
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        TokenReviewer("x", allow="*/*", credentials=Credentials(server=server, source="test", token="t"))
