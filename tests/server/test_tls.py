"""TLS: the protocol floor, AEAD-only suites, no plaintext, and certificate rotation with zero failed requests."""

import asyncio
import json
import os
import shutil
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.helpers import fixture
from tests.server.conftest import Webhook
from tests.tls_material import cert_and_key, client_context
from webhook.errors import CertificateError
from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE
from webhook.server.tls import CertificateReloader

BODY = json.dumps(fixture("deployment-pod-annotated.json")).encode()


def port_of(webhook: Webhook) -> int:
    return int(webhook.url.rsplit(":", 1)[1])


async def handshake(webhook: Webhook, context: ssl.SSLContext) -> ssl.SSLObject:
    _, writer = await asyncio.open_connection("127.0.0.1", port_of(webhook), ssl=context, server_hostname="localhost")
    ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
    writer.close()
    return ssl_object


async def refused_by_server(webhook: Webhook, context: ssl.SSLContext) -> None:
    """The handshake fails, and by the server's doing: an alert or a reset, not a client unable to offer."""
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as raised:
        await handshake(webhook, context)
    for client_side in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_CIPHER_MATCH"):
        assert client_side not in str(raised.value).upper()


async def presented_serial(webhook: Webhook) -> int:
    ssl_object = await handshake(webhook, client_context(webhook.certs))
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_in(folder: Path) -> int:
    return x509.load_pem_x509_certificate((folder / CERT_FILE).read_bytes()).serial_number


def next_pair(webhook: Webhook, folder: Path) -> Path:
    """A new serving certificate and key from the same CA, in ``folder`` (not yet in place)."""
    folder.mkdir()
    for name in (CA_FILE, CA_KEY_FILE):
        shutil.copy(webhook.certs / name, folder / name)
    write_certs(CertRequest(out_dir=folder, dns_names=("localhost",), ips=("127.0.0.1",)))
    return folder


def replace(source: Path, target: Path) -> None:
    """Replace ``target`` atomically, as cert-manager's Secret update reaches a mounted file."""
    tmp = target.with_name(target.name + ".new")
    shutil.copy(source, tmp)
    os.replace(tmp, target)


async def test_tls_1_2_is_accepted_with_an_aead_suite_only(webhook: Webhook) -> None:
    context = client_context(webhook.certs)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    ssl_object = await handshake(webhook, context)
    assert ssl_object.version() == "TLSv1.2"
    cipher = ssl_object.cipher()
    assert cipher is not None
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]


async def test_tls_1_3_is_accepted(webhook: Webhook) -> None:
    assert (await handshake(webhook, client_context(webhook.certs))).version() == "TLSv1.3"


async def test_a_tls_1_2_client_offering_only_non_aead_suites_is_refused(webhook: Webhook) -> None:
    context = client_context(webhook.certs)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    await refused_by_server(webhook, context)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
async def test_tls_1_0_and_1_1_are_refused_by_the_server(webhook: Webhook, version: ssl.TLSVersion) -> None:
    context = client_context(webhook.certs)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer the old protocol
    context.minimum_version = context.maximum_version = version
    await refused_by_server(webhook, context)


async def test_plaintext_http_on_the_tls_port_gets_no_http_answer(webhook: Webhook) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(webhook))
    writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(1024), timeout=5)
    writer.close()
    assert not answer.startswith(b"HTTP/")


async def test_a_client_that_does_not_trust_our_ca_cannot_connect(webhook: Webhook, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    write_certs(CertRequest(out_dir=other))
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(webhook, client_context(other))


def test_missing_certificate_files_stop_start_up_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"does not exist; make one with `token-projector certs`"):
        CertificateReloader(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))


def test_a_certificate_with_the_wrong_key_stops_start_up(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_certs(CertRequest(out_dir=other))
    with pytest.raises(CertificateError, match="not a usable certificate and matching key"):
        CertificateReloader(str(certs / CERT_FILE), str(other / KEY_FILE))


async def load(webhook: Webhook, *, seconds: float, fresh_connections: bool) -> tuple[int, list[str]]:
    """Send requests for ``seconds`` from 4 workers; return how many were sent and the failures."""
    sent, failures = 0, []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal sent
        connector = aiohttp.TCPConnector(ssl=client_context(webhook.certs), force_close=fresh_connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < deadline:
                sent += 1
                try:
                    async with session.post(
                        f"{webhook.url}/mutate", data=BODY, headers={"Content-Type": "application/json"}
                    ) as response:
                        if response.status != 200 or "patch" not in (await response.json())["response"]:
                            failures.append(f"HTTP {response.status}")
                except (aiohttp.ClientError, ssl.SSLError, OSError) as error:
                    failures.append(repr(error))

    await asyncio.gather(*(worker() for _ in range(4)))
    return sent, failures


@pytest.mark.parametrize("fresh_connections", [True, False], ids=["new-connections", "keep-alive"])
async def test_rotation_with_a_half_rotated_moment_fails_no_request_and_new_handshakes_get_the_new_certificate(
    webhook: Webhook, tmp_path: Path, fresh_connections: bool
) -> None:
    old = serial_in(webhook.certs)
    new_pair = next_pair(webhook, tmp_path / "next")
    assert await presented_serial(webhook) == old

    async def rotate() -> None:
        await asyncio.sleep(0.3)
        replace(new_pair / CERT_FILE, webhook.certs / CERT_FILE)  # new certificate, old key
        await asyncio.sleep(0.4)
        assert await presented_serial(webhook) == old, "a mismatched pair must never be served"
        replace(new_pair / KEY_FILE, webhook.certs / KEY_FILE)
        await asyncio.sleep(0.3)

    (sent, failures), _ = await asyncio.gather(
        load(webhook, seconds=1.5, fresh_connections=fresh_connections), rotate()
    )
    assert sent > 20
    assert failures == []
    assert await presented_serial(webhook) == serial_in(new_pair)
    assert webhook.reloader.status.reloads == 1
    assert webhook.reloader.status.failures == 1


async def test_a_kubelet_style_symlink_swap_is_picked_up(certs: Path, tmp_path: Path) -> None:
    # The kubelet mounts Secret keys as links through ..data to a timestamped folder, and swaps ..data.
    mount = tmp_path / "mount"
    mount.mkdir()
    first, second = mount / "..2026_11_23_1", mount / "..2026_11_23_2"
    shutil.copytree(certs, first)
    shutil.copytree(certs, second)
    write_certs(CertRequest(out_dir=second, dns_names=("localhost",)))
    (mount / "..data").symlink_to(first.name)
    for name in (CERT_FILE, KEY_FILE):
        (mount / name).symlink_to(f"..data/{name}")
    reloader = CertificateReloader(*cert_and_key(mount))
    assert reloader.check() == "unchanged"
    (mount / "..data_tmp").symlink_to(second.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    assert reloader.check() == "reloaded"
    assert reloader.status.not_after is not None
