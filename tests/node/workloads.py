"""The Pods the node tests run, made from the repository's own manifests and images.

Each Pod is the Deployment's template (``manifests/base/deployment.yaml``, the example's ``manifests/*.yaml``)
as written, changed only where a one-node loopback cluster needs it, and each change is named here:
``nodeName`` (no scheduler), ``hostNetwork`` with the service bound to 127.0.0.1 on a free port (no pod network;
its ports and probes follow, probes with ``host: 127.0.0.1``), the image built by ``tests/node/images.sh`` with
``imagePullPolicy: Never`` (no registry), and the API server's address where a Service would give it.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from tests.node.node import image
from tests.tools import REPO

EXAMPLE = REPO / "examples" / "api-and-data-store"
TOKEN_PROJECTOR = "token-projector.io"


def template(path: Path, name: str) -> dict[str, Any]:
    """The Pod template of the Deployment ``name`` in ``path``, as a Pod (deep copy)."""
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] == "Deployment" and document["metadata"]["name"] == name:
            spec = copy.deepcopy(document["spec"]["template"])
            return {"apiVersion": "v1", "kind": "Pod", "metadata": spec["metadata"], "spec": spec["spec"]}
    raise AssertionError(f"no Deployment {name} in {path}")


def on_loopback(pod: dict[str, Any], name: str, *, image_name: str, ports: dict[str, int]) -> dict[str, Any]:
    """``pod`` named ``name``, host network, the local image, each named container port (and probe) on ``ports``."""
    pod["metadata"]["name"] = name
    spec = pod["spec"]
    spec["hostNetwork"] = True
    spec.pop("priorityClassName", None)  # only for kube-system and the webhook's own namespace in a real cluster
    spec.pop("topologySpreadConstraints", None)
    for container in spec["containers"]:
        container["image"] = image(image_name)
        container["imagePullPolicy"] = "Never"
        for port in container.get("ports", []):
            port["containerPort"] = ports[port["name"]]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                get = container[probe]["httpGet"]
                get["host"] = "127.0.0.1"
                if isinstance(get["port"], str):
                    get["port"] = ports[get["port"]]
    return pod


def set_env(container: dict[str, Any], **values: str) -> None:
    """Set (or add) literal environment variables in ``container``."""
    env = [item for item in container.get("env", []) if item["name"] not in values]
    container["env"] = env + [{"name": key, "value": value} for key, value in values.items()]


def sleeper(
    name: str, *, audience: str | None, security: dict[str, Any], containers: list[dict[str, Any]]
) -> dict[str, Any]:
    """A Pod of the example's image whose containers only sleep, with ServiceAccount ``app``; annotated if asked."""
    annotations = {f"{TOKEN_PROJECTOR}/audience": audience} if audience else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "serviceAccountName": "app",
            "automountServiceAccountToken": False,
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 1,
            "securityContext": security,
            "containers": [
                {
                    "image": image("api-and-data-store"),
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    **container,
                }
                for container in containers
            ],
        },
    }


def digest(token: str) -> str:
    """What the tests keep and show of a token: a SHA-256 prefix, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


READ_TOKEN = """
import os, json
path = os.environ["SERVICE_ACCOUNT_TOKEN_PATH"]
print(json.dumps({"path": path, "token": open(path).read(), "uid": os.getuid(), "gid": os.getgid()}))
"""
"""Run in a container: the token at the path its environment names, read as the container's own user."""

READ_ALL_TOKENS = """
import os, json
folder = os.environ["SERVICE_ACCOUNT_TOKEN_DIR"]
names = sorted(n for n in os.listdir(folder) if not n.startswith(".."))
print(json.dumps({"primary": os.environ["SERVICE_ACCOUNT_TOKEN_PATH"],
                  "files": {n: open(os.path.join(folder, n)).read() for n in names}}))
"""
"""Run in a container of a Pod with several audiences: every file in its token folder, by name."""

TRY_TOKEN = """
import os, json, stat
path = os.environ["SERVICE_ACCOUNT_TOKEN_PATH"]
info = os.stat(path)
try:
    open(path).read()
    readable = True
except PermissionError:
    readable = False
print(json.dumps({"uid": os.getuid(), "groups": os.getgroups(), "readable": readable,
                  "mode": oct(stat.S_IMODE(info.st_mode)), "owner": info.st_uid, "group": info.st_gid}))
"""
"""Run in a container: whether its user can read the token, and the file's mode, owner and group."""
