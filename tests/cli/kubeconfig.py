"""A one-cluster kubeconfig file for the commands that talk to a cluster (``audit``, ``token review``).

The CLI tests point those commands at a fake API server the way a user points them at a cluster:
with ``--kubeconfig FILE``. This writes that file: one cluster, one user with a bearer token, one
context, current.
"""

import json
from pathlib import Path


def write_kubeconfig(path: Path, server: str, *, token: str, user: str = "u", ca_file: Path | None = None) -> Path:
    """``path``, now a kubeconfig for ``server`` (trusting ``ca_file`` if given) as ``user`` with ``token``."""
    cluster: dict[str, str] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": cluster}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user}}],
                "users": [{"name": user, "user": {"token": token}}],
            }
        )
    )
    return path
