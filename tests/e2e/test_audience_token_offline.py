"""The offline verifier and the ``token`` commands against the real kube-apiserver.

Tokens are requested the kubelet's way (TokenRequest for the Pod's ServiceAccount, with the audience
and expiration token-projector put in the Pod's projected volume, bound to the Pod). The offline
verifier fetches the keys from the API server's own discovery endpoints, with the admin's
credentials or with a service account that has only what Kubernetes grants every service account
(``system:service-account-issuer-discovery``).
"""

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from audience_token import TokenReviewer
from audience_token.errors import (
    EXPIRED_OR_REVOKED,
    INVALID,
    MALFORMED,
    WRONG_AUDIENCE,
    NotAllowed,
    ReviewUnavailable,
    Unauthenticated,
)
from audience_token.jwks import DISCOVERY_ROLE
from audience_token.offline import OfflineVerifier
from tests.e2e.conftest import ISSUER, NOBODY_TOKEN, ControlPlane, Registered
from tests.e2e.pods import annotated
from tests.e2e.tokens import claims_of, kubelet_token, request_token, token_bound_to
from tests.tls_material import free_port
from webhook.cli.token import register

pytestmark = pytest.mark.e2e


def resigned(control_plane: ControlPlane, token: str, **changes: Any) -> str:
    """``token``'s claims with ``changes``, signed with the cluster's own signing key and key id."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    key = serialization.load_pem_private_key((control_plane.workdir / "sa.key").read_bytes(), password=None)
    return jwt.encode({**claims, **changes}, key, algorithm=header["alg"], headers={"kid": header["kid"]})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pod_token(registered: Registered, control_plane: ControlPlane) -> tuple[str, dict[str, Any], str]:
    """(namespace, the Pod as stored after token-projector's patch, its data-store token)."""
    namespace = control_plane.namespace()
    stored = control_plane.create_pod(namespace, annotated())
    return namespace, stored, kubelet_token(control_plane, stored)


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig()


@pytest.fixture(scope="module")
def verifier_account(control_plane: ControlPlane) -> Path:
    """A kubeconfig for a service account granted nothing beyond Kubernetes' defaults."""
    namespace = control_plane.namespace()
    token = request_token(control_plane, namespace, "app", seconds=3600)
    return control_plane.kubeconfig(token=token, name="discovery-only")


async def test_a_pod_token_is_accepted_with_the_same_identity_token_review_reports(
    pod_token: tuple[str, dict[str, Any], str], admin: Path
) -> None:
    namespace, stored, token = pod_token
    async with OfflineVerifier("data-store", allow=f"{namespace}/app", kubeconfig=admin) as offline:
        identity = await offline.verify(token)
        assert offline.fetches == 1
    assert (identity.namespace, identity.service_account) == (namespace, "app")
    assert identity.pod_name == stored["metadata"]["name"]
    assert identity.pod_uid == stored["metadata"]["uid"]
    async with TokenReviewer("data-store", allow=f"{namespace}/app", kubeconfig=admin) as reviewer:
        reviewed = await reviewer.verify(token)
    assert identity == reviewed
    assert dict(identity.extra) == dict(reviewed.extra)


async def test_keys_are_fetched_with_only_the_default_issuer_discovery_role(
    pod_token: tuple[str, dict[str, Any], str], verifier_account: Path
) -> None:
    namespace, _, token = pod_token
    async with OfflineVerifier("data-store", allow="*/*", kubeconfig=verifier_account, issuer=ISSUER) as offline:
        assert (await offline.verify(token)).namespace == namespace


async def test_a_token_for_another_audience_is_refused_naming_the_audience(
    pod_token: tuple[str, dict[str, Any], str], admin: Path
) -> None:
    namespace, _, token = pod_token
    async with OfflineVerifier("secret-store", allow=f"{namespace}/app", kubeconfig=admin) as offline:
        with pytest.raises(Unauthenticated) as raised:
            await offline.verify(token)
    assert raised.value.reason == WRONG_AUDIENCE
    assert "'data-store'" in raised.value.message
    assert "'secret-store'" in raised.value.message


async def test_an_api_server_credential_is_refused_for_a_service_audience(
    pod_token: tuple[str, dict[str, Any], str], control_plane: ControlPlane, admin: Path
) -> None:
    _, stored, _ = pod_token
    api_token = token_bound_to(control_plane, stored, audience=None, seconds=3600)
    async with OfflineVerifier("data-store", allow="*/*", kubeconfig=admin) as offline:
        with pytest.raises(Unauthenticated) as raised:
            await offline.verify(api_token)
    assert raised.value.reason == WRONG_AUDIENCE


async def test_an_account_not_in_allow_is_not_allowed(pod_token: tuple[str, dict[str, Any], str], admin: Path) -> None:
    namespace, _, token = pod_token
    async with OfflineVerifier("data-store", allow=f"{namespace}/other", kubeconfig=admin) as offline:
        with pytest.raises(NotAllowed) as raised:
            await offline.verify(token)
    assert raised.value.identity.namespace == namespace


async def test_an_expired_token_signed_by_the_cluster_is_refused(
    pod_token: tuple[str, dict[str, Any], str], control_plane: ControlPlane, admin: Path
) -> None:
    namespace, _, token = pod_token
    now = int(time.time())
    expired = resigned(control_plane, token, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    async with OfflineVerifier("data-store", allow=f"{namespace}/app", kubeconfig=admin) as offline:
        assert (await offline.verify(resigned(control_plane, token))).namespace == namespace, "the re-signing is sound"
        with pytest.raises(Unauthenticated) as raised:
            await offline.verify(expired)
    assert raised.value.reason == EXPIRED_OR_REVOKED


async def test_garbage_and_a_forged_signature_are_refused(
    pod_token: tuple[str, dict[str, Any], str], admin: Path
) -> None:
    _, _, token = pod_token
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["kubernetes.io"]["namespace"] = "kube-system"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    async with OfflineVerifier("data-store", allow="*/*", kubeconfig=admin) as offline:
        with pytest.raises(Unauthenticated) as garbage:
            await offline.verify("not-a-token")
        assert offline.fetches == 0
        with pytest.raises(Unauthenticated) as forged:
            await offline.verify(f"{header}.{forged_payload}.{signature}")
    assert garbage.value.reason == MALFORMED
    assert forged.value.reason == INVALID


async def test_credentials_without_the_discovery_role_are_unavailable_naming_it(
    pod_token: tuple[str, dict[str, Any], str], control_plane: ControlPlane
) -> None:
    _, _, token = pod_token
    nobody = control_plane.kubeconfig(token=NOBODY_TOKEN, name="nobody")
    async with OfflineVerifier("data-store", allow="*/*", kubeconfig=nobody) as offline:
        with pytest.raises(ReviewUnavailable, match=DISCOVERY_ROLE):
            await offline.verify(token)


# -- the command line ---------------------------------------------------------------------------------


def token_command(*argv: str) -> int:
    top = argparse.ArgumentParser(prog="token-projector")
    register(top.add_subparsers(required=True))
    args = top.parse_args(["token", *argv])
    result: int = args.run(args)
    return result


@pytest.fixture(scope="module")
def token_path(pod_token: tuple[str, dict[str, Any], str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(pod_token[2])
    return path


def test_inspect_on_a_real_token_shows_its_pod_and_audience(
    pod_token: tuple[str, dict[str, Any], str], token_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace, stored, token = pod_token
    assert token_command("inspect", str(token_path)) == 0
    out = capsys.readouterr().out
    assert "projected service account token" in out
    assert f"issuer:          {ISSUER}" in out
    assert "audiences:       data-store" in out
    assert f"system:serviceaccount:{namespace}:app" in out
    assert stored["metadata"]["name"] in out
    assert "in 59m" in out or "in 1h" in out
    assert token.split(".")[2] not in out


def test_inspect_calls_a_token_for_the_api_server_an_api_credential(
    pod_token: tuple[str, dict[str, Any], str],
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, stored, _ = pod_token
    (tmp_path / "api").write_text(token_bound_to(control_plane, stored, audience=None, seconds=3600))
    assert token_command("inspect", str(tmp_path / "api")) == 0
    assert "Kubernetes API credential" in capsys.readouterr().out


@pytest.mark.parametrize("offline", [False, True])
def test_review_against_the_api_server_exits_0_accepted_1_refused(
    pod_token: tuple[str, dict[str, Any], str],
    token_path: Path,
    admin: Path,
    capsys: pytest.CaptureFixture[str],
    offline: bool,
) -> None:
    namespace, stored, _ = pod_token
    mode = ["--offline"] if offline else []
    assert token_command("review", "--audience", "data-store", "--kubeconfig", str(admin), *mode, str(token_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("accepted for audience 'data-store'")
    assert f"{namespace}/app" in out
    assert stored["metadata"]["uid"] in out
    argv = ("review", "--audience", "secret-store", "--kubeconfig", str(admin), *mode, str(token_path))
    assert token_command(*argv) == 1
    assert capsys.readouterr().out.startswith("refused (wrong_audience)")
    argv = ("review", "--audience", "data-store", "--allow", "x/y", "--kubeconfig", str(admin), *mode, str(token_path))
    assert token_command(*argv) == 1
    assert capsys.readouterr().out.startswith("refused (not allowed)")


def test_review_exits_2_when_there_is_no_verdict(
    token_path: Path, control_plane: ControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = control_plane.kubeconfig(token=NOBODY_TOKEN, name="nobody")
    assert token_command("review", "--audience", "data-store", "--kubeconfig", str(nobody), str(token_path)) == 2
    assert "tokenreviews" in capsys.readouterr().err
    stopped = json.loads(control_plane.kubeconfig().read_text())
    stopped["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    (tmp_path / "stopped").write_text(json.dumps(stopped))
    assert (
        token_command("review", "--audience", "data-store", "--kubeconfig", str(tmp_path / "stopped"), str(token_path))
        == 2
    )
    assert "no verdict" in capsys.readouterr().err
