"""``token-projector proxy`` as a process: streaming in flat memory, SIGTERM drain, TLS reload, JSON logs."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from audience_token import ReviewerSettings
from audience_token.proxy import Listen, ProxyLimits
from tests.audience_token.fake_api import FakeApiServer, fake_token
from tests.audience_token.tls import Material, make_material
from tests.proxy.process import ProxyProcess, fake_api_kubeconfig, log_lines, proxy_process
from tests.proxy.scenarios import DRAIN_SECONDS, MiB, drain_under_load, stream_100_mib_each_way
from webhook.cli.options import settings_table
from webhook.cli.proxy import ProxySettings, limits_of
from webhook.errors import ConfigError
from webhook.server.settings import ServerSettings

REPO = Path(__file__).parents[2]

CALLER = fake_token()


def inbound(kubeconfig: Path, app_url: str, *more: str) -> tuple[str, ...]:
    return (
        "--upstream",
        app_url,
        "--audience",
        "secret-store",
        "--allow",
        "api/*",
        "--kubeconfig",
        str(kubeconfig),
        *more,
    )


@pytest.fixture
async def running(fake_api: FakeApiServer, app_url: str, tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    async with proxy_process(*inbound(fake_api_kubeconfig(fake_api, tmp_path), app_url, "--drain-seconds", "0")) as p:
        yield p


async def test_a_100_mib_upload_and_download_pass_through_in_flat_memory(running: ProxyProcess) -> None:
    grown = await stream_100_mib_each_way(running, CALLER)
    assert grown < 16 * MiB, f"the proxy's peak memory grew {grown / MiB:.1f} MiB while streaming 2 x 100 MiB"


async def test_sigterm_drains_under_load_and_loses_no_request(
    fake_api: FakeApiServer, app_url: str, tmp_path: Path
) -> None:
    arguments = inbound(fake_api_kubeconfig(fake_api, tmp_path), app_url, "--drain-seconds", str(DRAIN_SECONDS))
    async with proxy_process(*arguments, "--shutdown-timeout-seconds", "5") as running:
        await drain_under_load(running, CALLER)


async def test_the_log_is_json_lines_and_never_holds_a_token(running: ProxyProcess) -> None:
    revoked = fake_token(valid=False)
    async with aiohttp.ClientSession() as session:
        for token in (CALLER, revoked, "not.a-token.at-all"):
            async with session.get(f"{running.url}/echo", headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(f"GET /echo HTTP/1.1\r\nAuthorization: Bearer {revoked}\r\nX: \x00\r\n\r\n".encode())
    await reader.read()
    writer.close()
    running.terminate()
    await running.process.wait()
    lines = log_lines(running)
    assert {line["msg"] for line in lines} >= {"serving", "stopped"}
    assert [line for line in lines if line["level"] == "error" or "exception" in line] == []
    assert any(line["msg"].startswith("a malformed request was refused (400") for line in lines)
    everything = "".join(running.stderr)
    for token in (CALLER, revoked):
        for part in token.split("."):
            assert part not in everything


async def test_a_tls_listener_serves_the_new_certificate_after_the_files_change(
    fake_api: FakeApiServer, app_url: str, tmp_path: Path
) -> None:
    first, second = make_material(tmp_path / "first"), make_material(tmp_path / "second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.server_cert, cert)
    shutil.copy(first.server_key, key)
    tls = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--cert-reload-seconds", "0.1")
    async with proxy_process(*inbound(fake_api_kubeconfig(fake_api, tmp_path), app_url, *tls), scheme="https") as p:
        assert await _status_with_ca(p, first) == 200
        shutil.copy(second.server_key, key)
        shutil.copy(second.server_cert, cert)
        deadline = time.monotonic() + 10
        while await _status_with_ca(p, second) != 200:
            assert time.monotonic() < deadline, "the new certificate was never served"
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session, session.get(f"{p.probes}/metrics") as response:
            assert 'token_projector_proxy_tls_certificate_reloads_total{result="success"} 1' in await response.text()


async def _status_with_ca(running: ProxyProcess, material: Material) -> int:
    context = ssl.create_default_context(cafile=str(material.ca))
    headers = {"Authorization": f"Bearer {CALLER}"}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{running.url}/echo", headers=headers, ssl=context) as response,
        ):
            return response.status
    except aiohttp.ClientConnectorCertificateError:
        return 0


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--upstream", "http://10.0.0.5:8080", "--audience", "a", "--allow", "a/b"], "loopback"),
        (["--upstream", "http://127.0.0.1:8080", "--audience", "a"], "--allow / TOKEN_PROJECTOR_ALLOW"),
        (["--upstream", "http://127.0.0.1:8080", "--audience", "a", "--allow", "A/B"], "allow pattern"),
        (["--outbound"], "--target / TOKEN_PROJECTOR_TARGET"),
        (["--outbound", "--target", "https://x.example", "--address", "0.0.0.0"], "loopback address"),
        (["--outbound", "--target", "https://x.example", "--target-ca-file", "/nonexistent/ca"], "--target-ca-file"),
        (["--outbound", "--target", "https://x.example", "--target-ca-file", __file__], "--target-ca-file"),
        (["--outbound", "--target", "http://secret-store.team.svc:8080"], "must be https://"),
    ],
)
def test_settings_that_cannot_work_exit_2_with_a_message_that_names_them(arguments: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "proxy", "--kubeconfig", "/nonexistent", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "cannot listen" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("cert_reload_seconds", 0.0, "--cert-reload-seconds"),
        ("cert_reload_seconds", -1.0, "--cert-reload-seconds"),
        ("drain_seconds", -1.0, "--drain-seconds"),
        ("shutdown_timeout_seconds", -0.5, "--shutdown-timeout-seconds"),
        ("verdict_cache_seconds", -10.0, "--verdict-cache-seconds"),
    ],
)
def test_a_period_that_cannot_work_is_refused_naming_its_flag(name: str, value: float, said: str) -> None:
    valid = ProxySettings(upstream="http://127.0.0.1:1", audience="a", allow=("a/b",))
    with pytest.raises(ConfigError, match=said):
        dataclasses.replace(valid, **{name: value})  # type: ignore[arg-type]  # each name is a float setting


@pytest.mark.parametrize(
    ("ports", "said"),
    [((0, 8444), "--port"), ((70000, 8444), "--port"), ((8443, -1), "--probe-port"), ((8443, 8443), "other than")],
)
def test_the_proxy_and_the_webhook_refuse_the_same_ports_alike(ports: tuple[int, int], said: str) -> None:
    port, probe_port = ports
    with pytest.raises(ConfigError, match=said) as proxy:
        ProxySettings(upstream="http://127.0.0.1:1", audience="a", allow=("a/b",), port=port, probe_port=probe_port)
    with pytest.raises(ConfigError, match=said) as webhook:
        ServerSettings(port=port, probe_port=probe_port)
    assert str(proxy.value) == str(webhook.value)


def test_zero_drain_shutdown_and_verdict_cache_are_accepted() -> None:
    ProxySettings(
        upstream="http://127.0.0.1:1",
        audience="a",
        allow=("a/b",),
        drain_seconds=0.0,
        shutdown_timeout_seconds=0.0,
        verdict_cache_seconds=0.0,
    )


def test_without_the_library_the_command_exits_2_naming_what_to_install() -> None:
    probe = (
        "import sys\n"
        "sys.modules['audience_token'] = None  # as after `pip install token-projector` alone\n"
        "from webhook.cli import main\n"
        "sys.exit(main(['proxy', '--upstream', 'http://127.0.0.1:8080', '--audience', 'a', '--allow', 'a/b']))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "pip install ./audience_token" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_extra_installs_the_library_by_a_name_this_project_does_not_publish() -> None:
    # An extra naming `audience-token` would fetch whatever holds that name on PyPI (dependency confusion).
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    library = tomllib.loads((REPO / "audience_token" / "pyproject.toml").read_text())["project"]
    wanted = [
        requirement
        for requirements in root["optional-dependencies"].values()
        for requirement in requirements
        if requirement.replace("_", "-").startswith(library["name"])
    ]
    assert wanted == []


def test_a_port_in_use_exits_2_saying_which(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        arguments = ["--upstream", "http://127.0.0.1:9", "--audience", "a", "--allow", "a/b", "--address", "127.0.0.1"]
        kubeconfig = tmp_path / "kubeconfig.json"
        kubeconfig.write_text(
            '{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"c","user":"u"}}],'
            '"clusters":[{"name":"c","cluster":{"server":"https://127.0.0.1:1"}}],"users":[{"name":"u","user":{"token":"t"}}]}'
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "webhook",
                "proxy",
                *arguments,
                "--port",
                str(port),
                "--kubeconfig",
                str(kubeconfig),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


LIMIT_FLAGS = {
    "connect_timeout": "connect_timeout_seconds",
    "upstream_timeout": "upstream_timeout_seconds",
    "client_body_timeout": "client_body_timeout_seconds",
    "upstream_connections": "upstream_connections",
    "max_header_bytes": "max_header_bytes",
    "identity_prefix": "identity_header_prefix",
}
"""Each of the library's ProxyLimits that the command line sets, and the setting that sets it."""
LISTEN_FLAGS = {
    "port": "port",
    "probe_port": "probe_port",
    "drain_seconds": "drain_seconds",
    "shutdown_timeout": "shutdown_timeout_seconds",
    "keepalive_timeout": "keepalive_timeout_seconds",
}


def test_the_command_lines_defaults_are_the_librarys() -> None:
    """The command line restates the library's defaults (it must not import the library to build --help):
    each one is held equal here, and each limit but the pool's idle time has its flag."""
    settings = ProxySettings(upstream="http://127.0.0.1:1", audience="a", allow=("a/b",))
    assert limits_of(settings) == ProxyLimits()
    assert {f.name for f in dataclasses.fields(ProxyLimits)} - set(LIMIT_FLAGS) == {"upstream_idle_seconds"}
    for limit, name in LIMIT_FLAGS.items():
        assert getattr(settings, name) == getattr(ProxyLimits(), limit), name
    for listen, name in LISTEN_FLAGS.items():
        assert getattr(settings, name) == getattr(Listen(), listen), name
    assert settings.verdict_cache_seconds == ReviewerSettings().success_ttl == ReviewerSettings().failure_ttl


def test_docs_proxy_md_shows_the_settings_table_generated_from_the_code() -> None:
    page = (REPO / "docs" / "proxy.md").read_text()
    assert settings_table(ProxySettings) in page, (
        "docs/proxy.md's settings table is out of date; regenerate it with python -c 'from webhook.cli.options "
        "import settings_table; from webhook.cli.proxy import ProxySettings; print(settings_table(ProxySettings))'"
    )
