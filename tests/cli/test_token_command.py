"""``token-projector token inspect|review``: what a person sees, and the exit codes scripts rely on.

``review`` against the real kube-apiserver is in tests/e2e/test_audience_token_offline.py; here the
offline mode runs against a FakeIssuer on real TLS and the TokenReview mode only where no server is
needed (unreachable, bad input, bad settings).
"""

import argparse
import asyncio
import io
import json
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from tests.audience_token.fake_issuer import ADMIN, FakeIssuer, claims, sign
from tests.cli.kubeconfig import write_kubeconfig
from tests.tls_material import make_certs
from tests.tools import REPO
from webhook.cli.token import register

KEY = ec.generate_private_key(ec.SECP256R1())
MakeServer = Callable[..., Awaitable[TestServer]]


def token_command(argv: list[str]) -> int:
    """Run ``token ...`` through a parser built only by this module's register()."""
    top = argparse.ArgumentParser(prog="token-projector")
    register(top.add_subparsers(required=True))
    args = top.parse_args(["token", *argv])
    result: int = args.run(args)
    return result


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[Path, str]:
    token = sign(KEY, claims())
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path, token


def test_inspect_prints_what_the_token_claims_and_never_the_signature(
    token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, token = token_file
    assert token_command(["inspect", str(path)]) == 0
    out = capsys.readouterr()
    for shown in ("secret-store", "system:serviceaccount:api:api", "api-7d9f", "node-1", "expires at:"):
        assert shown in out.out
    assert token.split(".")[2] not in out.out + out.err
    assert token.split(".")[1] not in out.out + out.err


def test_inspect_reads_standard_input(
    token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = token_file
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"Authorization: Bearer {token}\n".encode())))
    assert token_command(["inspect", "-"]) == 0
    assert "token from standard input" in capsys.readouterr().out


def test_inspect_defaults_to_the_file_the_webhooks_variable_names(
    token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = token_file
    monkeypatch.setenv("SERVICE_ACCOUNT_TOKEN_PATH", str(path))
    assert token_command(["inspect"]) == 0
    assert "token from $SERVICE_ACCOUNT_TOKEN_PATH" in capsys.readouterr().out


def test_inspect_without_a_file_or_the_variable_exits_2_saying_what_to_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERVICE_ACCOUNT_TOKEN_PATH", raising=False)
    assert token_command(["inspect"]) == 2
    err = capsys.readouterr().err
    assert "SERVICE_ACCOUNT_TOKEN_PATH" in err
    assert "token-projector.io/audience" in err


def test_inspect_says_plainly_when_it_is_a_legacy_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = sign(KEY, {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:api:api"})
    (tmp_path / "legacy").write_text(legacy)
    assert token_command(["inspect", str(tmp_path / "legacy")]) == 0
    out = capsys.readouterr().out
    assert "LEGACY" in out
    assert "never (no exp claim)" in out


def test_inspect_knows_an_api_audience_it_is_told(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t").write_text(sign(KEY, claims(audience="my-api")))
    assert token_command(["inspect", str(tmp_path / "t"), "--api-audience", "my-api"]) == 0
    assert "API-server credential" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"not a token", "three parts separated by"),
        (b"\xff\xfe binary", "not ASCII"),
        (b"x" * (64 * 1024 + 1), "larger than"),
    ],
)
def test_inspect_exits_2_on_what_is_not_a_token_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    (tmp_path / "bad").write_bytes(content)
    assert token_command(["inspect", str(tmp_path / "bad")]) == 2
    out = capsys.readouterr()
    assert says in out.err
    assert out.out == ""
    if content:
        assert content[:20].decode("ascii", "ignore") not in out.err or says == "larger than"


def test_inspect_exits_2_on_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command(["inspect", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.fixture
async def kubeconfig(tmp_path: Path, aiohttp_server: MakeServer) -> tuple[Path, FakeIssuer]:
    """A FakeIssuer on TLS and a kubeconfig for it, as ``token review --offline`` would be pointed at a cluster."""
    certs = make_certs(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    fake = FakeIssuer(keys=[KEY])
    server = await aiohttp_server(fake.app(), ssl=context, host="127.0.0.1")
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        f"https://localhost:{server.port}",
        token=ADMIN,
        user="admin",
        ca_file=certs / "ca.crt",
    )
    return path, fake


async def review(*argv: str) -> int:
    # The command runs its own event loop (asyncio.run), as from a shell: give it a thread of its own.
    return await asyncio.to_thread(token_command, ["review", *argv])


async def test_review_offline_prints_the_identity_and_exits_0(
    kubeconfig: tuple[Path, FakeIssuer], token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = token_file
    args = ("--audience", "secret-store", "--allow", "api/api", "--offline", "--kubeconfig", str(kubeconfig[0]))
    assert await review(*args, str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("accepted for audience 'secret-store' (offline")
    assert "api/api" in out
    assert "api-7d9f" in out


async def test_review_offline_exits_1_for_another_audience_naming_it(
    kubeconfig: tuple[Path, FakeIssuer], token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, token = token_file
    assert await review("--audience", "vault", "--offline", "--kubeconfig", str(kubeconfig[0]), str(path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused (wrong_audience)")
    assert "'vault'" in out
    assert token.split(".")[2] not in out


async def test_review_offline_exits_1_for_an_account_not_allowed_and_shows_who_it_was(
    kubeconfig: tuple[Path, FakeIssuer], token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = token_file
    argv = ("--audience", "secret-store", "--allow", "data/*", "--offline", "--kubeconfig", str(kubeconfig[0]))
    assert await review(*argv, str(path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused (not allowed)")
    assert "system:serviceaccount:api:api" in out


async def test_review_offline_exits_2_when_the_keys_cannot_be_had(
    kubeconfig: tuple[Path, FakeIssuer], token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = token_file
    kubeconfig[1].fault = 503
    assert await review("--audience", "secret-store", "--offline", "--kubeconfig", str(kubeconfig[0]), str(path)) == 2
    assert "no verdict" in capsys.readouterr().err


async def test_review_exits_2_when_the_api_server_is_unreachable(
    tmp_path: Path, token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certs(tmp_path / "certs")
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "current-context": "c",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": "https://127.0.0.1:9", "certificate-authority": str(certs / "ca.crt")},
                    }
                ],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    path, _ = token_file
    assert await review("--audience", "secret-store", "--kubeconfig", str(config), str(path)) == 2
    err = capsys.readouterr().err
    assert "no verdict" in err
    assert "127.0.0.1:9" in err


@pytest.mark.parametrize("offline", [[], ["--offline"]])
async def test_review_exits_2_for_what_is_not_a_token_before_asking_anyone(
    kubeconfig: tuple[Path, FakeIssuer], tmp_path: Path, capsys: pytest.CaptureFixture[str], offline: list[str]
) -> None:
    (tmp_path / "garbage").write_text("hello.world")
    argv = ["--audience", "secret-store", "--kubeconfig", str(kubeconfig[0]), *offline, str(tmp_path / "garbage")]
    assert await review(*argv) == 2
    assert "bad input" in capsys.readouterr().err
    assert kubeconfig[1].requests == []


async def test_review_exits_2_for_a_bad_allow_pattern(
    kubeconfig: tuple[Path, FakeIssuer], token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = token_file
    assert await review("--audience", "a", "--allow", "api", "--kubeconfig", str(kubeconfig[0]), str(path)) == 2
    assert "NAMESPACE/SERVICEACCOUNT" in capsys.readouterr().err


def test_review_outside_a_pod_without_a_kubeconfig_exits_2_saying_what_to_pass(
    token_file: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path, _ = token_file
    assert token_command(["review", "--audience", "secret-store", str(path)]) == 2
    assert "kubeconfig" in capsys.readouterr().err


def test_review_requires_an_audience(token_file: tuple[Path, str]) -> None:
    with pytest.raises(SystemExit) as raised:
        token_command(["review", str(token_file[0])])
    assert raised.value.code == 2


@pytest.mark.parametrize("action", [["inspect"], ["review", "--audience", "a"]])
def test_without_the_library_the_commands_exit_2_saying_what_to_install(
    token_file: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    action: list[str],
) -> None:
    monkeypatch.setitem(sys.modules, "audience_token", None)
    assert token_command([*action, str(token_file[0])]) == 2
    assert "pip install ./audience_token" in capsys.readouterr().err


def test_the_installed_command_runs_token_inspect(token_file: tuple[Path, str]) -> None:
    from webhook.cli import command

    if not any(getattr(m, "register", None) is register for m in command.COMMANDS):
        pytest.skip("webhook/cli/command.py does not call webhook.cli.token.register yet (the lead wires it)")
    path, token = token_file
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "token", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "system:serviceaccount:api:api" in result.stdout
    assert token not in result.stdout


def test_inspect_escapes_control_characters_and_ansi_escapes_in_every_claim_it_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A token's claims are its maker's: a subject that returns the cursor and rewrites the line, ANSI
    # colour and cursor-up sequences, a bell, a bidi override, in every field that is printed.
    hostile = "\r\x1b[2K\x1b[1Asystem:serviceaccount:kube-system:admin\x07\u202e"
    forged = claims(audience=f"secret-store{hostile}", issuer=f"https://issuer{hostile}")
    forged.update(sub=f"system:serviceaccount:api:api{hostile}", jti=hostile)
    forged["kubernetes.io"]["pod"]["name"] = f"api-7d9f{hostile}"
    forged["kubernetes.io"]["node"]["name"] = f"node-1{hostile}"
    (tmp_path / "hostile").write_text(sign(KEY, forged, kid=f"k{hostile}"))
    assert token_command(["inspect", str(tmp_path / "hostile")]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\r\x1b\x07\u202e"), "no byte a terminal acts on is printed as it is"
    assert out.count("\\x1b[2K") >= 7, "each hostile value is shown, escaped"
    for escaped in ("\\r", "\\x07", "\\u202e"):
        assert escaped in out
