"""The ``token-projector serve`` command line the tests start as a real process on loopback.

Tests that need a live webhook (the e2e webhook the API server calls, the monitoring and chart tests)
start it as an operator would, ``python -m webhook serve``, with its certificate files and free ports;
drain time 0, since nothing routes traffic to it that a drain would protect.
"""

import sys
from pathlib import Path


def serve_command(*, port: int, probe_port: int, cert_file: Path, key_file: Path) -> list[str]:
    """``python -m webhook serve`` on 127.0.0.1 with these ports and certificate files, no drain."""
    return [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--probe-port",
        str(probe_port),
        "--cert-file",
        str(cert_file),
        "--key-file",
        str(key_file),
        "--drain-seconds",
        "0",
    ]
