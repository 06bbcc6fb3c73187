"""``token-projector serve`` as a real process on loopback, for the tests that need a live server.

The monitoring tests scrape what it really exports, and the chart tests serve the certificates Helm
generated with it. Started as ``python -m webhook serve`` on free ports, as an operator would.
"""

import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import fixture
from tests.serve_command import serve_command
from tests.tls_material import free_port


@dataclass(frozen=True)
class Server:
    port: int
    probe_port: int

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the plain-HTTP port (probes and /metrics)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.probe_port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def review(self, *, ca_file: Path) -> int:
        """POST the annotated fixture to /mutate over TLS, trusting ``ca_file``; the HTTP status."""
        context = ssl.create_default_context(cafile=str(ca_file))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            connection.request("POST", "/mutate", annotated_review(), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


def make_dev_certs(folder: Path) -> Path:
    """``token-projector certs`` for 127.0.0.1 into ``folder``, as a developer makes them."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out-dir", str(folder), "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return folder


@contextmanager
def serving(workdir: Path, *, cert_file: Path, key_file: Path) -> Iterator[Server]:
    """A ready ``token-projector serve`` with these certificate files; stopped (SIGTERM) on exit."""
    server = Server(free_port(), free_port())
    with (workdir / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            serve_command(port=server.port, probe_port=server.probe_port, cert_file=cert_file, key_file=key_file),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            deadline = time.monotonic() + 30
            while _status(server, "/readyz") != 200:
                assert process.poll() is None, (workdir / "serve.log").read_text()
                assert time.monotonic() < deadline, "token-projector serve did not become ready"
                time.sleep(0.05)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _status(server: Server, path: str) -> int:
    try:
        return server.get(path)[0]
    except OSError:
        return 0


def annotated_review() -> bytes:
    """The annotated Deployment Pod fixture, as the API server sends it."""
    return json.dumps(fixture("deployment-pod-annotated.json")).encode()
