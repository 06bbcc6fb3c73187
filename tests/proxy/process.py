"""``token-projector proxy`` as a real process, as the sidecar runs it: start, wait until ready, measure, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.audience_token.fake_api import OWN_TOKEN, FakeApiServer
from tests.tls_material import free_port


def fake_api_kubeconfig(fake_api: FakeApiServer, folder: Path) -> Path:
    """A JSON kubeconfig for the FakeApiServer with the reviewer's own token."""
    path = folder / "kubeconfig.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [
                    {
                        "name": "fake",
                        "cluster": {"server": fake_api.url, "certificate-authority": str(fake_api.material.ca)},
                    }
                ],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "proxy"}}],
                "users": [{"name": "proxy", "user": {"token": OWN_TOKEN}}],
            }
        )
    )
    return path


@dataclass
class ProxyProcess:
    process: asyncio.subprocess.Process
    port: int
    probe_port: int
    scheme: str = "http"
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def probes(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def memory(self, field_name: str = "VmHWM") -> int:
        """Resident memory in bytes from /proc: ``VmHWM`` (the peak so far) or ``VmRSS`` (now)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(field_name)

    def reset_peak(self) -> None:
        """Start ``VmHWM`` again from the current resident size (Linux 4.0+: write 5 to clear_refs)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


@asynccontextmanager
async def proxy_process(
    *arguments: str, scheme: str = "http", env: dict[str, str] | None = None
) -> AsyncIterator[ProxyProcess]:
    """``python -m webhook proxy ARGUMENTS`` on free loopback ports; ready when /readyz answers 200."""
    port, probe_port = free_port(), free_port()
    command = [sys.executable, "-m", "webhook", "proxy", "--address", "127.0.0.1", "--port", str(port)]
    command += ["--probe-port", str(probe_port), *arguments]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_PROJECTOR_")}
    process = await asyncio.create_subprocess_exec(
        *command, stderr=asyncio.subprocess.PIPE, env={**environment, **(env or {})}
    )
    running = ProxyProcess(process, port, probe_port, scheme)
    reader = asyncio.create_task(_collect(process, running.stderr))
    try:
        await _ready(running)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await reader


async def _collect(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        lines.append(line.decode(errors="replace"))


async def _ready(running: ProxyProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if running.process.returncode is not None:
            raise AssertionError(f"the proxy exited with {running.process.returncode}: {''.join(running.stderr)}")
        if await asyncio.to_thread(_status, running.probes + "/readyz") == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the proxy did not become ready: {''.join(running.stderr)}")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def log_lines(running: ProxyProcess) -> list[dict[str, Any]]:
    """The proxy's stderr, each line parsed as JSON (the test fails on a line that is not)."""
    return [json.loads(line) for line in running.stderr if line.strip()]
