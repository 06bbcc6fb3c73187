"""TLS for the admission server: hardened contexts, and certificate reload without a restart.

cert-manager rotates the serving certificate, and the kubelet swaps a Secret volume's files through
a symlink, so the files change under a running server. The listening socket keeps one SSLContext;
its ``sni_callback`` (which OpenSSL calls for every handshake, with or without SNI) hands each new
connection the *current* context. A reload builds a complete new context from the files and swaps
it in only if the certificate and key load as a matching pair; until then the old pair keeps
serving. So a half-rotated pair (new certificate, old key) never breaks the live server, and
connections already open are never touched.
"""

import logging
import os
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509

from webhook.errors import CertificateError

log = logging.getLogger("token_projector.tls")

TLS_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""TLS 1.0 and 1.1 are broken and deprecated (RFC 8996); the API server's Go client speaks 1.2 and 1.3."""
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites: AEAD only, forward secrecy only. (Every TLS 1.3 suite is already AEAD.)"""

_Stamp = tuple[tuple[int, int, int, int], ...]
ReloadResult = Literal["unchanged", "reloaded", "failed"]
"""What one ``CertificateReloader.check`` did: the metrics count reloads and failures from it."""


def hardened_context() -> ssl.SSLContext:
    """A server context with our protocol floor and cipher policy, and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_MINIMUM_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])  # aiohttp serves HTTP/1.1; say so instead of letting a client guess
    return context


def load_context(cert_file: str, key_file: str) -> tuple[ssl.SSLContext, datetime]:
    """A hardened context serving the pair, and the certificate's expiry; ``CertificateError`` if unusable."""
    for path in (cert_file, key_file):
        # ssl's own FileNotFoundError does not say which file is missing; ours does.
        if not os.path.exists(path):
            raise CertificateError(f"{path} does not exist; make one with `token-projector certs` (or `make certs`)")
    context = hardened_context()
    try:
        context.load_cert_chain(cert_file, key_file)
        with open(cert_file, "rb") as handle:
            not_after = x509.load_pem_x509_certificate(handle.read()).not_valid_after_utc
    except ssl.SSLError as error:
        raise CertificateError(
            f"{cert_file} and {key_file} are not a usable certificate and matching key: {error.reason or error}"
        ) from None
    except (OSError, ValueError) as error:
        raise CertificateError(f"cannot read {cert_file} / {key_file}: {error}") from None
    return context, not_after


@dataclass
class ReloadStatus:
    reloads: int = 0
    failures: int = 0
    not_after: datetime | None = None


class CertificateReloader:
    """Serves the newest matching certificate/key pair found on disk; see the module docstring."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.status = ReloadStatus()
        self._current, self.status.not_after = load_context(cert_file, key_file)
        self._stamp = self._read_stamp()
        self._failed_stamp: _Stamp | None = None
        # The first pair's context listens, and its callback moves each handshake to whichever
        # context is current (at first, itself). Contexts loaded later need no callback.
        self.listening_context = self._current
        self.listening_context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        connection.context = self._current

    def check(self) -> ReloadResult:
        """Reload if the files changed: ``reloaded`` when a new pair was swapped in, ``failed`` when
        the changed files are not a usable pair (the old one keeps serving), else ``unchanged``."""
        stamp = self._read_stamp()
        if stamp == self._stamp or stamp == self._failed_stamp:
            return "unchanged"
        try:
            context, not_after = load_context(self.cert_file, self.key_file)
        except CertificateError as error:
            # Half-rotated or half-written: keep serving the old pair and look again next time.
            self._failed_stamp = stamp
            self.status.failures += 1
            log.warning(
                "certificate reload failed; still serving the previous certificate",
                extra={"fields": {"error": str(error)}},
            )
            return "failed"
        self._current, self._stamp, self._failed_stamp = context, stamp, None
        self.status.reloads += 1
        self.status.not_after = not_after
        log.info("certificate reloaded", extra={"fields": {"not_after": not_after.isoformat()}})
        return "reloaded"

    def _read_stamp(self) -> _Stamp:
        stamps = []
        for path in (self.cert_file, self.key_file):
            try:
                info = os.stat(path)  # follows the kubelet's ..data symlink to the real file
            except OSError:
                stamps.append((0, 0, 0, 0))
                continue
            stamps.append((info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(stamps)
