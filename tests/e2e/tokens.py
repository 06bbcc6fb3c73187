"""Service-account tokens for the e2e tests: minted and reviewed the way the cluster's own parts do it.

No kubelet runs here, so the tests ask the API server for the tokens it would. One TokenRequest body,
one TokenReview body, written once:

- ``request_token``: a TokenRequest for ``namespace/account``, with an audience (none: the API
  server's own), an expiration, and bound to a Pod, each only when asked.
- ``kubelet_token``: what the kubelet asks for a ``serviceAccountToken`` source of a projected volume
  of a Pod *as the API server stored it* (pkg/volume/projected/projected.go): the Pod's
  ServiceAccount, the source's audience and ``expirationSeconds``, bound to the Pod (name and uid).
- ``review``: a TokenReview as a receiving service sends it, for its own audience.
- ``claims_of``: a JWT's payload, unverified, decoded here rather than by audience_token so that the
  tests read what they minted independently of the library they check.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.e2e.conftest import ControlPlane
from tests.e2e.pods import token_volumes


def request_token(
    control_plane: ControlPlane,
    namespace: str,
    account: str,
    *,
    audience: str | None = None,
    seconds: int | None = None,
    pod: dict[str, Any] | None = None,
) -> str:
    """A token for ServiceAccount ``namespace/account``; each of audience, expiration and Pod binding only if given."""
    spec: dict[str, Any] = {}
    if audience is not None:
        spec["audiences"] = [audience]
    if seconds is not None:
        spec["expirationSeconds"] = seconds
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    answer = control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    token: str = answer["status"]["token"]
    return token


def token_bound_to(control_plane: ControlPlane, stored: dict[str, Any], *, audience: str | None, seconds: int) -> str:
    """A token for the stored Pod's ServiceAccount, bound to the Pod, for ``audience`` (None: the API server's)."""
    return request_token(
        control_plane,
        stored["metadata"]["namespace"],
        stored["spec"]["serviceAccountName"],
        audience=audience,
        seconds=seconds,
        pod=stored,
    )


def first_source(stored: dict[str, Any]) -> dict[str, Any]:
    """The first ``serviceAccountToken`` source of the volume token-projector added to the stored Pod."""
    source: dict[str, Any] = token_volumes(stored)[0]["projected"]["sources"][0]["serviceAccountToken"]
    return source


def kubelet_token(control_plane: ControlPlane, stored: dict[str, Any], *, source: dict[str, Any] | None = None) -> str:
    """The token the kubelet writes for ``source`` (default: ``first_source``) of the stored Pod."""
    source = first_source(stored) if source is None else source
    return request_token(
        control_plane,
        stored["metadata"]["namespace"],
        stored["spec"]["serviceAccountName"],
        # the kubelet leaves audiences out for a source without one: the API server's own
        audience=source.get("audience") or None,
        seconds=source.get("expirationSeconds"),
        pod=stored,
    )


def review(control_plane: ControlPlane, token: str, *, audience: str | None) -> dict[str, Any]:
    """The TokenReview status for ``token`` reviewed for ``audience`` (None: the API server's own)."""
    spec: dict[str, Any] = {"token": token}
    if audience is not None:
        spec["audiences"] = [audience]
    status: dict[str, Any] = control_plane.request(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
    )["status"]
    return status


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: to read the claims of a token the test minted itself."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims
