"""The example's two services as processes on loopback, started the way their containers start them.

Each runs ``python -m services.api`` / ``python -m services.data_store`` (the Deployments' commands)
with the environment its container has in the stored Pod, plus what stands in for the cluster here:
``ADDRESS``/``PORT`` on 127.0.0.1, the data store's loopback URL in place of its Service's DNS name,
the token file's host path in place of the mount path, and a kubeconfig in place of in-cluster
credentials. The example folder's name has dashes, so it is not an importable package: it is put on
``PYTHONPATH`` (the folder that holds the ``services`` package), and the repository's root is the
working directory (for ``audience_token``). The environment is built from nothing: a developer's
``KUBECONFIG`` or proxy variables do not leak in. Output goes to a log file the tests read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.example_cluster import EXAMPLE
from tests.tls_material import free_port
from tests.tools import REPO

MODULES = {"api": "services.api", "data-store": "services.data_store"}
READY_SECONDS = 30


def base_env() -> dict[str, str]:
    """What every service process starts with: a PATH, the example on PYTHONPATH, unbuffered output."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(EXAMPLE), "PYTHONUNBUFFERED": "1"}


def run_to_exit(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run service ``name`` with ``env`` until it exits on its own (as one that refuses to start does)."""
    return subprocess.run(
        [sys.executable, "-m", MODULES[name]],
        cwd=REPO,
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Service:
    """One service process; ``start()`` returns once it answers on its probe path."""

    name: str
    """``api`` or ``data-store``."""
    env: dict[str, str]
    log_file: Path
    probe: str = "/healthz"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        env = {
            **base_env(),
            **self.env,
            "ADDRESS": "127.0.0.1",
            "PORT": str(self.port),
        }
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", MODULES[self.name]], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._answers():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not answer {self.probe} within {READY_SECONDS}s:\n{self.log}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.probe, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet stops a container; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def api(
    *, env: dict[str, str], token_path: Path, data_store: Service, log_file: Path, refresh_seconds: float
) -> Service:
    """The api with its container's ``env``, reading ``token_path`` and calling ``data_store``."""
    settings = {
        "SERVICE_ACCOUNT_TOKEN_PATH": str(token_path),
        "DATA_STORE_URL": data_store.url,
        "TOKEN_REFRESH_SECONDS": str(refresh_seconds),
    }
    return Service("api", {**env, **settings}, log_file, probe="/readyz").start()


def data_store(*, env: dict[str, str], kubeconfig: Path, log_file: Path, cache_seconds: float) -> Service:
    """The data store with its container's ``env``, reaching the API server through ``kubeconfig``."""
    settings = {"KUBECONFIG": str(kubeconfig), "REVIEW_CACHE_SECONDS": str(cache_seconds)}
    return Service("data-store", {**env, **settings}, log_file).start()
