"""A stand-in for the kubelet, for the example's Pods: their tokens, minted and laid out as it does.

The real kubelet runs in ``tests/node/`` (the same claims: token bound to the Pod, at the path the env var names,
rotated and picked up without a restart); this stand-in stays where it is faster for the same claim: a rotation
on demand instead of after 480 s, and the example's processes on loopback instead of Pods.

For a ``serviceAccountToken`` source of a projected volume *as the API server stored the Pod*, the
kubelet asks for a TokenRequest for the Pod's ServiceAccount with the source's audience (none: the
API server's own) and ``expirationSeconds``, bound to the Pod (``tests.e2e.tokens.kubelet_token``), and
writes the answer into the volume with its atomic writer (``ProjectedVolume``: timestamped directory, ``..data``
symlink, one rename per refresh). ``Projection.rotate`` is its refresh. ``Projection.host_path``
maps a path the container would see (``SERVICE_ACCOUNT_TOKEN_PATH``) to the file on this machine,
through the container's volume mount, so the process reads exactly the file the variable names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.audience_token.kubelet_volume import ProjectedVolume
from tests.e2e.conftest import ControlPlane
from tests.e2e.tokens import kubelet_token


def container(stored: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in stored["spec"]["containers"] if c["name"] == name)
    return found


def env_of(stored_container: dict[str, Any]) -> dict[str, str]:
    """The container's literal environment variables, in order (``valueFrom`` is not used by the example)."""
    return {item["name"]: item["value"] for item in stored_container.get("env", []) if "value" in item}


def token_source(volume: dict[str, Any]) -> dict[str, Any]:
    """The one ``serviceAccountToken`` source of a projected volume."""
    sources = [s["serviceAccountToken"] for s in volume["projected"]["sources"] if "serviceAccountToken" in s]
    assert len(sources) == 1, f"volume {volume['name']} has {len(sources)} serviceAccountToken sources"
    found: dict[str, Any] = sources[0]
    return found


@dataclass
class Projection:
    """One projected token volume of one stored Pod, on disk as the kubelet keeps it."""

    control_plane: ControlPlane
    pod: dict[str, Any]
    volume: dict[str, Any]
    files: ProjectedVolume
    token: str

    @classmethod
    def of(cls, control_plane: ControlPlane, stored: dict[str, Any], *, volume: str, root: Path) -> Projection:
        """Mint the token for the stored Pod's volume named ``volume`` and write it under ``root``."""
        found = next(v for v in stored["spec"].get("volumes", []) if v["name"] == volume)
        source = token_source(found)
        token = kubelet_token(control_plane, stored, source=source)
        mode = found["projected"].get("defaultMode", 0o644)
        files = ProjectedVolume.create(root, {source["path"]: token}, mode=mode)
        return cls(control_plane, stored, found, files, token)

    @property
    def source(self) -> dict[str, Any]:
        return token_source(self.volume)

    def rotate(self) -> str:
        """The kubelet's refresh: a new token for the same source, swapped in atomically; returns it."""
        source = self.source
        self.token = kubelet_token(self.control_plane, self.pod, source=source)
        self.files.rotate({source["path"]: self.token}, mode=self.volume["projected"].get("defaultMode", 0o644))
        return self.token

    def host_path(self, container_name: str, path: str) -> Path:
        """Where ``path``, as container ``container_name`` sees it through this volume's mount, is on this machine."""
        mounts = [m for m in container(self.pod, container_name)["volumeMounts"] if m["name"] == self.volume["name"]]
        assert len(mounts) == 1, f"container {container_name} mounts volume {self.volume['name']} {len(mounts)} times"
        inside = os.path.relpath(path, mounts[0]["mountPath"])
        assert not inside.startswith(".."), f"{path} is not under the mount {mounts[0]['mountPath']}"
        return self.files.root / inside
