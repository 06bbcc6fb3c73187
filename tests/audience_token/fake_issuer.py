"""FakeIssuer: a stand-in for kube-apiserver's service account issuer discovery, on real TLS.

It serves ``/.well-known/openid-configuration`` and ``/openid/v1/jwks`` as kube-apiserver does, for
signing keys the test holds, so the unit tests can mint what a real API server will not (expired,
future, wrongly signed, foreign-issuer tokens), rotate keys at will and produce faults (5xx, garbage,
403). The real API server's discovery is exercised in tests/e2e/test_audience_token_offline.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN = "fake-admin-token"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def key_id(key: PrivateKey) -> str:
    """kube-apiserver's kid: base64url of the SHA-256 of the public key's DER."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    jwk: dict[str, Any] = jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "use": "sig", "kid": key_id(key), "alg": algorithm}


def claims(
    *,
    audience: str | list[str] = "secret-store",
    namespace: str = "api",
    account: str = "api",
    pod: str | None = "api-7d9f",
    node: str | None = "node-1",
    lifetime: int = 3600,
    issued: float | None = None,
    issuer: str = ISSUER,
) -> dict[str, Any]:
    """The claims kube-apiserver puts in a Pod-bound projected token."""
    now = int(issued if issued is not None else time.time())
    k8s: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": account, "uid": "sa-uid-" + account},
    }
    if pod is not None:
        k8s["pod"] = {"name": pod, "uid": "pod-uid-" + pod}
    if node is not None:
        k8s["node"] = {"name": node, "uid": "node-uid-" + node}
    return {
        "aud": [audience] if isinstance(audience, str) else audience,
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": k8s,
        "sub": f"system:serviceaccount:{namespace}:{account}",
    }


def sign(key: PrivateKey, payload: dict[str, Any], *, kid: str | None = "auto") -> str:
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    headers = {} if kid is None else {"kid": key_id(key) if kid == "auto" else kid}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


@dataclass
class FakeIssuer:
    """The discovery endpoints of one API server; ``fault`` makes every answer that HTTP status."""

    keys: list[PrivateKey] = field(default_factory=lambda: [ec.generate_private_key(ec.SECP256R1())])
    issuer: str = ISSUER
    fault: int | None = None
    garbage: bool = False
    requests: list[str] = field(default_factory=list)
    base_url: str = ""
    """Set once the server listens; the discovery document's jwks_uri points here."""
    gate: asyncio.Event | None = None
    """When set, every answer waits until the event is set: a key endpoint as slow as the test wants."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/openid/v1/jwks", self.jwks)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        self.requests.append(request.path)
        if self.fault is not None:
            return web.Response(status=self.fault, text="fault")
        if request.headers.get("Authorization") not in (f"Bearer {ADMIN}", None):
            return web.json_response({"message": "forbidden"}, status=403)
        return None

    async def discovery(self, request: web.Request) -> web.Response:
        if self.gate is not None:
            await self.gate.wait()
        if refused := self._refusal(request):
            return refused
        if self.garbage:
            return web.Response(text="<html>not json</html>")
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.base_url or self.issuer}/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        if refused := self._refusal(request):
            return refused
        # As kube-apiserver: the key set is application/jwk-set+json, and a client accepting only
        # application/json gets 406.
        if "application/jwk-set+json" not in request.headers.get("Accept", ""):
            return web.Response(status=406, text="only application/jwk-set+json")
        body = json.dumps({"keys": [public_jwk(k) for k in self.keys]})
        return web.Response(text=body, content_type="application/jwk-set+json")
