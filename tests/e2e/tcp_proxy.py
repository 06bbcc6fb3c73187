"""A TCP proxy on loopback that a test controls: it forwards bytes, and can cut every connection and refuse new ones.

Between token-projector and the real kube-apiserver it breaks the ServiceAccount watch the way a
network does (TLS passes through untouched, so the API server's certificate is what the client sees).
"""

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def cut(self) -> None:
        """Reset every connection in flight (the watch among them)."""
        with self._lock:
            ends = list(self._open)
        for end in ends:
            self._close(end)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Cut every connection and refuse new ones for the ``with`` block."""
        self._refusing = True
        self.cut()
        try:
            yield
        finally:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
