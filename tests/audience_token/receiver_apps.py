"""Small apps behind each receiver adapter, built from environment variables, for servers in a child process.

gunicorn imports ``tests.audience_token.receiver_apps:flask_app()``; the test that starts it says in
``AUDIENCE_TOKEN_TEST_*`` variables which API server to ask (the FakeApiServer, or the real
kube-apiserver of tests/e2e through a kubeconfig), for which audience, allowing whom.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from audience_token import ReviewerSettings, TokenReviewer
from audience_token.kube import Credentials

OPEN_PATH = "/healthz/ready"
RULES = {"DELETE /secrets/*": ["system:serviceaccounts:ops"], "GET /admin/*": ["system:serviceaccounts:ops"]}


def environment(
    *,
    audience: str,
    allow: str,
    server: str = "",
    ca: str = "",
    own_token: str = "",
    kubeconfig: str = "",
    success_ttl: float = 10.0,
) -> dict[str, str]:
    """The variables ``reviewer()`` reads in the child; with a kubeconfig, ``server`` replaces its server."""
    return {
        "AUDIENCE_TOKEN_TEST_SUCCESS_TTL": str(success_ttl),
        "AUDIENCE_TOKEN_TEST_AUDIENCE": audience,
        "AUDIENCE_TOKEN_TEST_ALLOW": allow,
        "AUDIENCE_TOKEN_TEST_SERVER": server,
        "AUDIENCE_TOKEN_TEST_CA": ca,
        "AUDIENCE_TOKEN_TEST_OWN_TOKEN": own_token,
        "AUDIENCE_TOKEN_TEST_KUBECONFIG": kubeconfig,
    }


def reviewer(env: Mapping[str, str] | None = None) -> TokenReviewer:
    env = os.environ if env is None else env
    audience, allow = env["AUDIENCE_TOKEN_TEST_AUDIENCE"], env["AUDIENCE_TOKEN_TEST_ALLOW"].split(",")
    settings = ReviewerSettings(timeout=2, success_ttl=float(env.get("AUDIENCE_TOKEN_TEST_SUCCESS_TTL", "10")))
    if env.get("AUDIENCE_TOKEN_TEST_KUBECONFIG"):
        credentials = Credentials.from_kubeconfig(env["AUDIENCE_TOKEN_TEST_KUBECONFIG"])
        if env.get("AUDIENCE_TOKEN_TEST_SERVER"):
            credentials = dataclasses.replace(credentials, server=env["AUDIENCE_TOKEN_TEST_SERVER"])
        return TokenReviewer(audience, allow=allow, credentials=credentials, settings=settings)
    credentials = Credentials(
        server=env["AUDIENCE_TOKEN_TEST_SERVER"],
        source="FakeApiServer",
        ca_file=env["AUDIENCE_TOKEN_TEST_CA"],
        token=env["AUDIENCE_TOKEN_TEST_OWN_TOKEN"],
    )
    return TokenReviewer(audience, allow=allow, credentials=credentials, settings=settings)


def flask_app() -> Any:
    """A Flask app whose wsgi_app is behind audience_token.wsgi: ``/`` answers the caller."""
    from flask import Flask, jsonify, request

    from audience_token.wsgi import AudienceTokenMiddleware, identity_of

    app = Flask("receiver")

    @app.get("/")
    def whoami() -> Any:
        caller = identity_of(request)
        return jsonify(caller=str(caller), pod=caller.pod_name)

    @app.get(OPEN_PATH)
    def ready() -> str:
        try:
            identity_of(request)
        except LookupError:
            return "ok"
        return "an open path has a caller"

    @app.delete("/secrets/<name>")
    def delete(name: str) -> Any:
        return jsonify(deleted=name, caller=str(identity_of(request)))

    @app.route("/<path:rest>", methods=["GET", "POST"])
    def anything(rest: str) -> str:
        return f"protected {identity_of(request)}"

    app.wsgi_app = AudienceTokenMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, reviewer(), open_paths={OPEN_PATH}, rules=RULES
    )
    return app
