"""FakeApiServer: a stand-in for kube-apiserver's TokenReview endpoint, to produce what a real one won't.

A fake, and named so: the real API server's behaviour is proven in tests/e2e/test_audience_token_reviewer.py.
This one exists for what a real server will not do on demand: answer 5xx, hang, send garbage, refuse
the reviewer's own credentials with a chosen status, answer slowly enough that concurrent requests
pile up, and count every TokenReview exactly. It serves real TLS on a real loopback socket.

Its idea of a valid token is the test's: ``fake_token(...)`` writes claims shaped like a Kubernetes
service account token, and ``valid=False`` marks one the "cluster" does not accept (revoked, forged).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from audience_token.errors import VerificationError
from audience_token.identity import Identity
from audience_token.kube import Credentials
from tests.audience_token.tls import Material

OWN_TOKEN = "reviewer-own-token"
"""The bearer token the FakeApiServer accepts from the reviewer itself (see ``accepted_bearers``)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_token(
    namespace: str = "api",
    name: str = "api",
    *,
    audiences: tuple[str, ...] = ("secret-store",),
    expires_in: float = 3600,
    valid: bool = True,
    pod: tuple[str, str] | None = ("api-7d4b9", "0f6c1e1a-1111-4a7e-9d4c-2b5f0a9d0001"),
    subject: str | None = None,
    nonce: str = "",
) -> str:
    """A JWS-shaped token with a Kubernetes service account token's claims (the signature is filler)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": list(audiences),
        "exp": now + int(expires_in),
        "iat": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": subject or f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": f"uid-{namespace}-{name}"}},
        "fake": {"valid": valid, "nonce": nonce},
    }
    if pod:
        claims["kubernetes.io"]["pod"] = {"name": pod[0], "uid": pod[1]}
    header = _b64(json.dumps({"alg": "RS256", "kid": "fake"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'signature-filler-' * 8)}"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


@dataclass
class FakeApiServer:
    """A fake kube-apiserver TokenReview endpoint with faults on demand (``fault``) and a review count."""

    material: Material
    require_client_cert: bool = False
    fault: str | None = None
    """None, "500", "503", "429", "401", "403", "404", "hang", "garbage", "not_a_review", "huge", "redirect"
    (307 to ``/elsewhere`` on this server, which counts what reaches it in ``redirected``)."""
    retry_after: str = "7"
    """The Retry-After header of the "503" and "429" faults."""
    answer: dict[str, Any] | None = None
    """When set, the TokenReview's ``status`` is exactly this, whatever the token: any shape at all."""
    redirected: int = 0
    delay: float = 0.0
    """Seconds each answer waits: lets concurrent verifies pile up behind one review."""
    accepted_bearers: set[str] | None = field(default_factory=lambda: {OWN_TOKEN})
    """The reviewer tokens it accepts (else 401); None accepts any, as with client certificates."""
    reviews: int = 0
    bearers_seen: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def credentials(self, **overrides: Any) -> Credentials:
        values: dict[str, Any] = {"server": self.url, "source": "FakeApiServer", "ca_file": str(self.material.ca)}
        values["token"] = OWN_TOKEN
        values.update(overrides)
        return Credentials(**values)

    async def _tokenreviews(self, request: web.Request) -> web.StreamResponse:
        self.reviews += 1
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.bearers_seen.append(bearer)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault in ("500", "503", "429", "404"):
            headers = {"Retry-After": self.retry_after} if self.fault in ("503", "429") else {}
            return web.json_response(
                {"kind": "Status", "message": "etcdserver: fake trouble"}, status=int(self.fault), headers=headers
            )
        if self.fault == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        if self.fault == "garbage":
            return web.Response(body=b"\x00\xffnot json at all", content_type="application/json", status=201)
        if self.fault == "huge":
            return web.Response(body=b" " * (2 * 1024 * 1024), content_type="application/json", status=201)
        if self.fault == "not_a_review":
            return web.json_response({"kind": "Status", "status": "Success"}, status=201)
        if self.fault == "403":
            return web.json_response(
                {
                    "kind": "Status",
                    "message": 'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:rev:rev"'
                    ' cannot create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope',
                },
                status=403,
            )
        if self.fault == "401" or (self.accepted_bearers is not None and bearer not in self.accepted_bearers):
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        review = await request.json()
        if self.answer is not None:
            return web.json_response({**review, "status": self.answer}, status=201)
        try:
            status = self._status(review["spec"]["token"], review["spec"].get("audiences") or [])
        except (KeyError, TypeError, ValueError, AttributeError):  # claims of a shape the fake cannot read
            status = {"authenticated": False, "error": "invalid bearer token"}
        return web.json_response({**review, "status": status}, status=201)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        review = await request.json()
        user = {"username": "system:serviceaccount:api:api"}
        status = {"authenticated": True, "user": user, "audiences": review["spec"]["audiences"]}
        return web.json_response({**review, "status": status}, status=201)

    @staticmethod
    def _status(token: str, requested: list[str]) -> dict[str, Any]:
        claims = _claims(token)
        if not claims["fake"]["valid"] or claims["exp"] < time.time():
            return {"authenticated": False, "error": "invalid bearer token"}
        audiences = [a for a in claims["aud"] if a in requested]
        if not audiences:
            return {"authenticated": False, "error": "token audiences is invalid for the target audiences"}
        user: dict[str, Any] = {"username": claims["sub"], "uid": "uid-x", "groups": ["system:authenticated"]}
        k8s = claims["kubernetes.io"]
        if claims["sub"].startswith("system:serviceaccount:"):
            user["uid"] = k8s["serviceaccount"]["uid"]
            user["groups"] = ["system:serviceaccounts", f"system:serviceaccounts:{k8s['namespace']}", *user["groups"]]
            if "pod" in k8s:
                user["extra"] = {
                    "authentication.kubernetes.io/pod-name": [k8s["pod"]["name"]],
                    "authentication.kubernetes.io/pod-uid": [k8s["pod"]["uid"]],
                    "authentication.kubernetes.io/credential-id": ["JTI=fake"],
                }
        return {"authenticated": True, "user": user, "audiences": audiences}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeApiServer]:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._tokenreviews)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.material.server_cert, self.material.server_key)
        if self.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.material.ca)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        with socket.socket() as probe:  # a free port; the tests are the only users of loopback ports here
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()
        try:
            yield self
        finally:
            await self._runner.cleanup()


def assert_no_token_in(error: BaseException, token: str) -> None:
    """Neither the token nor any of its three parts shows in the error's message or repr."""
    for part in token.split("."):
        assert part not in str(error)
        assert part not in repr(error)


async def outcome_of(verification: Awaitable[Identity]) -> Identity | VerificationError:
    """The Identity, or the VerificationError raised: any other exception propagates and fails the test."""
    try:
        return await verification
    except VerificationError as refused:
        return refused
