"""The client of the instruction counts: sends each request so that the server reads it the same way every time.

A server under callgrind is some 50 times slower than this client, and what it does depends on
when bytes arrive: a 60 KiB body may come in one read or in five, and a request that arrives while
the server is still finishing the one before joins that loop iteration instead of waking a new
one. Each costs its own instructions, so a fast client that just keeps the connection busy makes
counts that differ by a percent from run to run. This one waits, at every step, for the server to
be done with the last: each request goes out in TLS records of ``PIECE`` bytes, each sent once the
one before is acknowledged by the server's kernel and read by the server (both queues empty in
/proc/net/tcp) and the server sleeps in ``epoll_wait`` with nothing to run (/proc/PID/syscall).
With ``log`` it also waits for the request's log line to reach the file, so that each request pays
for its own write of the log (the webhook writes its lines in batches every 0.1 s: at callgrind's
pace that batch would otherwise hold one line or three, depending on the machine's speed).
Only Linux has these files; so does valgrind's callgrind.
"""

import re
import socket
import ssl
import time
from pathlib import Path

from bench.instructions_callgrind import idle_in_epoll, wait_until_blocked

PIECE = 16 * 1024
"""The largest TLS record's payload: one record, one read of the server, per piece."""
PATIENCE = 600.0
"""Seconds to wait for any one step of a server under callgrind before giving up on it."""


class Client:
    """One keep-alive HTTPS connection to ``port`` of the server process ``server_pid``, one request at a time."""

    def __init__(self, port: int, *, certs: Path, server_pid: int, log: Path | None = None) -> None:
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = context.wrap_socket(raw, server_hostname="localhost")
        self.port, self.server_pid, self.log = port, server_pid, log
        ours = self.socket.getsockname()[1]
        # /proc/net/tcp lines: "sl: local remote state tx_queue:rx_queue ...", in hex; 01 is ESTABLISHED.
        line = r"^\s*\d+: 0100007F:{:04X} 0100007F:{:04X} 01 ([0-9A-F]{{8}}):([0-9A-F]{{8}})"
        self._ours, self._theirs = re.compile(line.format(ours, port), re.M), re.compile(line.format(port, ours), re.M)
        self._pending = b""

    def post(self, data: bytes) -> bytes:
        """POST ``data`` to /mutate; return the answer's body once the server is idle again (a 200 only)."""
        request = (
            f"POST /mutate HTTP/1.1\r\nHost: localhost:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        logged = self.log.stat().st_size if self.log else 0
        for start in range(0, len(request), PIECE):
            self.socket.sendall(request[start : start + PIECE])
            self._wait_until_taken()
            wait_until_blocked(self.server_pid, idle_in_epoll, timeout=PATIENCE)
        answer = self._answer()
        if self.log:
            self._wait_until_logged(logged)
        return answer

    def close(self) -> None:
        self.socket.close()

    def _wait_until_taken(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while True:
            table = Path("/proc/net/tcp").read_text()
            ours, theirs = self._ours.search(table), self._theirs.search(table)
            if ours is None or theirs is None:
                raise SystemExit("the benchmark's connection is not in /proc/net/tcp")
            # Nothing of ours unacknowledged (tx_queue), nothing of the server's unread (rx_queue).
            if int(ours.group(1), 16) == 0 and int(theirs.group(2), 16) == 0:
                return
            if time.monotonic() > deadline:
                raise SystemExit("the server stopped reading")
            time.sleep(0.0005)

    def _wait_until_logged(self, size: int) -> None:
        deadline = time.monotonic() + PATIENCE
        while self.log and self.log.stat().st_size == size:
            if time.monotonic() > deadline:
                raise SystemExit("the server wrote no log line for a request")
            time.sleep(0.002)
        wait_until_blocked(self.server_pid, idle_in_epoll, timeout=PATIENCE)

    def _answer(self) -> bytes:
        while b"\r\n\r\n" not in self._pending:
            self._receive()
        head, _, rest = self._pending.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise SystemExit(f"an answer without Content-Length: {head[:300]!r}")
        while len(rest) < int(length.group(1)):
            rest += self._receive_some()
        answer, self._pending = rest[: int(length.group(1))], rest[int(length.group(1)) :]
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise SystemExit(f"answer {status.decode()}: {answer[:300]!r}")
        return answer

    def _receive(self) -> None:
        self._pending += self._receive_some()

    def _receive_some(self) -> bytes:
        chunk = self.socket.recv(256 * 1024)
        if not chunk:
            raise SystemExit("the server closed the connection")
        return chunk
