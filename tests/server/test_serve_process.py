"""``token-projector serve`` as a real process: start-up, SIGTERM drain, and start-up errors."""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import fixture
from tests.tls_material import cert_and_key, client_context, free_port, make_certs

BODY = json.dumps(fixture("deployment-pod-annotated.json")).encode()


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    probe_port: int
    context: ssl.SSLContext

    def ready(self) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.probe_port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status
        except OSError:
            return 0
        finally:
            connection.close()

    def post(self) -> tuple[int, dict[str, object]]:
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=5)
        try:
            connection.request("POST", "/mutate", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


def start(tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--address", "127.0.0.1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    certs = make_certs(tmp_path / "certs")
    cert_file, key_file = cert_and_key(certs)
    port, probe_port = free_port(), free_port()
    process = start(
        tmp_path,
        "--port",
        str(port),
        "--probe-port",
        str(probe_port),
        "--cert-file",
        cert_file,
        "--key-file",
        key_file,
        "--drain-seconds",
        "1",
        "--shutdown-timeout-seconds",
        "5",
    )
    served = Served(process, port, probe_port, client_context(certs))
    deadline = time.monotonic() + 20
    while served.ready() != 200:
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)
    yield served
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_the_served_process_answers_reviews_with_a_patch(served: Served) -> None:
    status, answer = served.post()
    assert status == 200
    assert "patch" in answer["response"]  # type: ignore[operator]


def test_sigterm_turns_readiness_false_at_once_finishes_the_request_in_flight_and_exits_cleanly(served: Served) -> None:
    # A request in flight: headers and half the body sent, the rest still to come.
    raw = socket.create_connection(("127.0.0.1", served.port))
    tls = served.context.wrap_socket(raw, server_hostname="localhost")
    head = (
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    tls.sendall(head.encode() + BODY[: len(BODY) // 2])
    time.sleep(0.2)

    sent_at = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    while served.ready() != 503:
        assert time.monotonic() - sent_at < 0.5, "readiness must fail at once"
        time.sleep(0.01)

    # During the drain the server still answers new requests.
    status, answer = served.post()
    assert status == 200
    assert "patch" in answer["response"]  # type: ignore[operator]

    tls.sendall(BODY[len(BODY) // 2 :])
    response = http.client.HTTPResponse(tls)
    response.begin()
    assert response.status == 200
    assert json.loads(response.read())["response"]["uid"] == fixture("deployment-pod-annotated.json")["request"]["uid"]
    tls.close()

    assert served.process.wait(timeout=10) == 0
    assert time.monotonic() - sent_at < 1 + 5 + 2, "exits within drain + shutdown timeout"
    logs = [json.loads(line) for line in served.process.communicate()[1].decode().splitlines()]
    # Request lines are written in batches; by exit every one is out, in the order things happened.
    assert [entry["msg"] for entry in logs] == [
        "serving",
        "draining",
        "admission review",  # the request sent during the drain
        "admission review",  # the request that was in flight at SIGTERM
        "stopped",
    ]


def test_missing_certificates_stop_the_process_with_status_2_and_a_hint(tmp_path: Path) -> None:
    process = start(tmp_path, "--port", str(free_port()), "--probe-port", "0", "--cert-file", "none.crt")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "none.crt does not exist; make one with `token-projector certs`" in err.decode()
    assert "Traceback" not in err.decode()


def test_an_invalid_setting_from_the_environment_stops_the_process_with_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "TOKEN_PROJECTOR_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "serve"], env=env, capture_output=True, cwd=tmp_path, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--port / TOKEN_PROJECTOR_PORT" in result.stderr.decode()
