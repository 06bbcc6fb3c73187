"""Servers for the callers' tests (httpx, requests): real HTTP(S) on real loopback sockets, in a thread.

``FakeReceiver`` is a fake, and named so: a real receiver verifies tokens; this one records the
``Authorization`` header (and body) of every request, answers 401 to the tokens the test puts in
``refuse`` (and on ``/refuse`` to anyone), and redirects on demand (``/redirect?to=URL&status=302``),
which a real receiver would not do. It runs in a thread of its own so that synchronous clients
(requests, ``httpx.Client``) and asynchronous ones (``httpx.AsyncClient`` in the test's loop) reach
it alike.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.audience_token.tls import Material


def fake_token() -> str:
    return ".".join(secrets.token_urlsafe(24) for _ in range(3))


@dataclass
class Seen:
    path: str
    authorization: str | None
    body: bytes


@dataclass
class FakeReceiver:
    """One origin: records what arrives; 401 for ``refuse``d tokens; redirects on ``/redirect``."""

    host: str = "127.0.0.1"
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    scheme: str = "http"

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def redirect(self, to: str, status: int = 302) -> str:
        """A URL of this origin that answers ``status`` with ``Location: to``."""
        return self.url("/redirect?" + urlencode({"to": to, "status": status}))

    @property
    def authorizations(self) -> list[str | None]:
        return [s.authorization for s in self.seen]

    @contextmanager
    def running(self, tls: Material | None = None) -> Iterator[FakeReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self) -> None:
                body = self._body()
                parts = urlsplit(self.path)
                header = self.headers.get("Authorization")
                receiver.seen.append(Seen(parts.path, header, body))
                refused = parts.path == "/refuse" or (
                    header is not None and header.removeprefix("Bearer ") in receiver.refuse
                )
                if parts.path == "/redirect" and not refused:
                    query = parse_qs(parts.query)
                    self.send_response(int(query.get("status", ["302"])[0]))
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = b"refused" if refused else b"ok"
                self.send_response(401 if refused else 200)
                if refused:
                    self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.server_cert, tls.server_key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            self.scheme = "https"
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name=f"fake-receiver-{self.port}", daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@contextmanager
def default_ports(tls: Material) -> Iterator[tuple[FakeReceiver, FakeReceiver]]:
    """``http://127.0.0.1`` (port 80) and ``https://127.0.0.1`` (port 443): the one upgrade clients allow.

    Binding ports under 1024 needs root (CI and this project's machines run as root); elsewhere, or
    when another process holds a port, the test that asked is skipped and says why.
    """

    try:
        with FakeReceiver(port=80).running() as plain, FakeReceiver(port=443).running(tls=tls) as secure:
            yield plain, secure
    except (PermissionError, OSError) as error:
        if getattr(error, "errno", None) not in (13, 98):  # EACCES, EADDRINUSE
            raise
        pytest.skip(f"ports 80 and 443 on 127.0.0.1 are not free to bind here: {error}")
