"""Pods for the e2e tests, as a user would write them (the API server does the defaulting)."""

from typing import Any

AUDIENCE = "token-projector.io/audience"
TOKEN_VOLUME = {
    "name": "audience-token",
    "projected": {
        "defaultMode": 420,
        "sources": [{"serviceAccountToken": {"audience": "data-store", "expirationSeconds": 3600, "path": "token"}}],
    },
}
TOKEN_MOUNT = {"name": "audience-token", "mountPath": "/var/run/secrets/token-projector.io/tokens", "readOnly": True}
TOKEN_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": "/var/run/secrets/token-projector.io/tokens/token"}


def pod(
    name: str | None = "app",
    *,
    annotations: dict[str, str] | None = None,
    generate_name: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"annotations": annotations or {}}
    if name:
        metadata["name"] = name
    if generate_name:
        metadata["generateName"] = generate_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox:1.36"}], **spec},
    }


def annotated(name: str | None = "app", audience: str = "data-store", **kw: Any) -> dict[str, Any]:
    return pod(name, annotations={AUDIENCE: audience, **kw.pop("annotations", {})}, **kw)


def token_volumes(stored: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in stored["spec"].get("volumes", []) if v["name"] == "audience-token"]
