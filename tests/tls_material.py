"""Real TLS material for tests, made by token-projector's own certificate tooling."""

import socket
import ssl
from pathlib import Path

from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CA_FILE, CERT_FILE, KEY_FILE


def make_certs(folder: Path) -> Path:
    """A CA and a serving certificate for localhost and 127.0.0.1 in ``folder``."""
    write_certs(CertRequest(out_dir=folder, dns_names=("localhost",), ips=("127.0.0.1",)))
    return folder


def client_context(folder: Path) -> ssl.SSLContext:
    """A client that trusts only the CA in ``folder`` and checks the host name, as the API server does."""
    return ssl.create_default_context(cafile=str(folder / CA_FILE))


def cert_and_key(folder: Path) -> tuple[str, str]:
    return str(folder / CERT_FILE), str(folder / KEY_FILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
