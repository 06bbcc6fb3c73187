"""Certificate tooling: a private CA and a serving certificate for the webhook, made with ``cryptography``.

The API server calls the webhook through its Service name and checks the certificate against the
MutatingWebhookConfiguration's ``caBundle``. Its Go TLS client ignores the Common Name and only
accepts Subject Alternative Names, so every name the webhook is reached by is a SAN.
"""

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.errors import ConfigError
from webhook.install.deployment import (
    CA_FILE,
    CA_KEY_FILE,
    CA_VALIDITY_DAYS,
    CERT_FILE,
    KEY_FILE,
    NAMESPACE,
    SERVICE_NAME,
    SERVING_VALIDITY_DAYS,
)

_CURVE = ec.SECP256R1()
"""ECDSA P-256: accepted by every Kubernetes TLS client, fast handshakes, 128-bit security."""
_BACKDATE = datetime.timedelta(minutes=5)
"""Tolerate small clock skew between the machine that signs and the API server that verifies."""


@dataclass(frozen=True, kw_only=True)
class CertRequest:
    out_dir: Path
    service: str = SERVICE_NAME
    namespace: str = NAMESPACE
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    validity_days: int = SERVING_VALIDITY_DAYS

    def all_dns_names(self) -> list[str]:
        names = [self.service, f"{self.service}.{self.namespace}", f"{self.service}.{self.namespace}.svc"]
        return names + [name for name in self.dns_names if name not in names]

    def files(self) -> list[Path]:
        """The four files ``write_certs`` writes, in the order it names them."""
        return [self.out_dir / name for name in (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)]

    def serving_pair_exists(self) -> bool:
        return (self.out_dir / CERT_FILE).exists() and (self.out_dir / KEY_FILE).exists()


def write_certs(request: CertRequest, *, now: datetime.datetime | None = None) -> None:
    """Write a CA (reused when ``ca.crt`` and ``ca.key`` exist) and a serving certificate signed by it."""
    if not 1 <= request.validity_days <= CA_VALIDITY_DAYS:
        raise ConfigError(f"--validity-days must be between 1 and {CA_VALIDITY_DAYS}, got {request.validity_days}")
    try:
        ips = [ipaddress.ip_address(ip) for ip in request.ips]
    except ValueError as error:
        raise ConfigError(f"--ip: {error}") from None
    now = now or datetime.datetime.now(datetime.UTC)
    request.out_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(request.out_dir, now)
    key = ec.generate_private_key(_CURVE)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in request.all_dns_names()]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{request.service}.{request.namespace}.svc")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=request.validity_days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # The key goes first: a watcher that sees the new certificate must find its key already there
    # (the server also refuses to switch to a pair that does not match).
    _write(request.out_dir / KEY_FILE, _key_pem(key), private=True)
    _write(
        request.out_dir / CERT_FILE,
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM),
    )


def ca_bundle(ca_file: Path) -> str:
    """The base64 text a ``caBundle`` field takes, from a PEM CA file."""
    return base64.b64encode(ca_file.read_bytes()).decode("ascii")


def _load_or_make_ca(out_dir: Path, now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_file, ca_key_file = out_dir / CA_FILE, out_dir / CA_KEY_FILE
    if ca_file.exists() and ca_key_file.exists():
        # Reusing the CA keeps the caBundle already registered with the API server valid.
        cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc <= now:
            raise ConfigError(f"{ca_file} is expired or not an EC CA; remove ca.crt and ca.key to make a new CA")
        return cert, key
    key = ec.generate_private_key(_CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-projector CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        # path_length=0: this CA signs serving certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(ca_key_file, _key_pem(key), private=True)
    _write(ca_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signing,
        crl_sign=signing,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (rename), so a reader never sees half a file; keys readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
