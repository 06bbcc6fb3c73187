"""Helpers for the TokenReviewer e2e tests: RBAC, review counts, a cut-off (tokens: tests/e2e/tokens.py).

- ``reviewer_identity``: a ServiceAccount for the receiver itself, with or without a binding to the
  ClusterRole shipped in manifests/audience-token, and a kubeconfig with its token.
- ``tokenreviews_served``: TokenReviews the API server has answered, from its own /metrics.
- ``Forwarder``: a loopback TCP forwarder in front of the shared API server, so a test can make the API
  server unreachable (close the forwarder) without stopping the control plane the other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import ADMIN_TOKEN, ISSUER, ControlPlane
from tests.e2e.pods import annotated
from tests.e2e.tokens import request_token
from tests.tools import REPO

MANIFESTS = REPO / "manifests" / "audience-token"


def shipped(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MANIFESTS / name).read_text())
    return document


def install_cluster_role(control_plane: ControlPlane) -> str:
    """Create (or keep) the ClusterRole exactly as manifests/audience-token ships it; returns its name."""
    role = shipped("clusterrole.yaml")
    with contextlib.suppress(Exception):
        control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body=role)
    name: str = role["metadata"]["name"]
    return name


@dataclass(frozen=True)
class ReviewerAccount:
    namespace: str
    name: str
    kubeconfig: Path


def reviewer_identity(control_plane: ControlPlane, *, bound: bool) -> ReviewerAccount:
    """A receiver's own ServiceAccount and a kubeconfig with its token; ``bound``: to the shipped role."""
    namespace = control_plane.namespace()
    name = "receiver"
    control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": name}})
    if bound:
        binding = shipped("clusterrolebinding.yaml")
        binding["metadata"] = {"name": f"{namespace}-token-reviewer"}
        binding["roleRef"]["name"] = install_cluster_role(control_plane)
        binding["subjects"] = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=binding)
    token = request_token(control_plane, namespace, name, audience=ISSUER)
    kubeconfig = control_plane.kubeconfig(token=token, name=f"receiver-{uuid.uuid4().hex[:6]}")
    return ReviewerAccount(namespace, name, kubeconfig)


_TOKENREVIEWS = re.compile(r'^apiserver_request_total\{([^}]*resource="tokenreviews"[^}]*)\} ([0-9.e+]+)$', re.M)


def annotated_caller(control_plane: ControlPlane, *, audience: str) -> dict[str, Any]:
    """A caller Pod (ServiceAccount ``app``) annotated for ``audience``, admitted through the webhook, as stored."""
    stored = control_plane.create_pod(control_plane.namespace(), annotated(audience=audience))
    assert stored["spec"]["volumes"], "the webhook gave the Pod its token volume"
    return stored


def tokenreviews_served(control_plane: ControlPlane) -> int:
    """TokenReviews the API server has answered so far (``apiserver_request_total``), as admin reads it."""
    request = urllib.request.Request(control_plane.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, context=control_plane.context, timeout=30) as response:
        text = response.read().decode()
    return sum(int(float(value)) for labels, value in _TOKENREVIEWS.findall(text) if 'verb="POST"' in labels)


class Forwarder:
    """127.0.0.1:port → the API server, byte for byte; ``close()`` cuts every connection and the port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> Forwarder:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
