"""The data store: answers only api/api, whose token the API server vouches for, for audience ``data-store``.

Every request but ``/healthz`` goes through ``audience_token.protect`` with a ``TokenReviewer``: the
TokenReview API says whether the bearer token is valid *for this audience*, and ``allow`` says which
service accounts may call. The library maps the outcomes to HTTP (401 not a valid token for us, 403
a valid one from a caller not allowed, 503 no verdict to be had, with ``Retry-After``); the handler
only ever sees a verified ``Identity`` and says who called.

The data store itself needs a Kubernetes API credential (its Pod's own service account token, bound
to the ``audience-token-reviewer`` ClusterRole): that is what lets it create TokenReviews.

    python -m services.data_store        # settings: see services.settings.DataStoreSettings
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from audience_token import ConfigError, ReviewerSettings, TokenReviewer, Verifier, identity_of, protect
from services.serving import configure_logging, refuse_to_start, serve
from services.settings import DataStoreSettings, SettingsError

log = logging.getLogger("services.data_store")

OPEN_PATHS = ("/healthz",)
"""The kubelet's probes carry no token: these paths answer without one."""


def reviewer_for(settings: DataStoreSettings) -> TokenReviewer:
    """The verifier the settings describe; raises ConfigError (naming the problem) if it cannot work."""
    return TokenReviewer(
        settings.audience,
        allow=settings.allow,
        kubeconfig=settings.kubeconfig,
        settings=ReviewerSettings(
            success_ttl=settings.cache_seconds,
            failure_ttl=settings.cache_seconds,
            timeout=settings.review_timeout_seconds,
        ),
    )


def make_app(verifier: Verifier) -> web.Application:
    """The data store's aiohttp app, every route but ``OPEN_PATHS`` behind ``verifier``."""
    app = web.Application()
    app.router.add_get("/", who_called)
    app.router.add_get("/healthz", healthz)
    return protect(app, verifier, open_paths=OPEN_PATHS)


async def who_called(request: web.Request) -> web.Response:
    caller = identity_of(request)
    pod = f" from Pod {caller.namespace}/{caller.pod_name}" if caller.pod_name else ""
    log.debug("accepted %s", caller)
    return web.json_response(
        {
            "message": f"authenticated as {caller.username}{pod}",
            "username": caller.username,
            "pod": caller.pod_name,
            "credential_id": caller.credential_id,
        }
    )


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> int:
    """``python -m services.data_store``: settings from the environment, then serve until SIGTERM."""
    try:
        settings = DataStoreSettings.from_environ(os.environ)
    except SettingsError as error:
        return refuse_to_start("data-store", error)
    configure_logging(settings.log_level)
    try:
        reviewer = reviewer_for(settings)
    except ConfigError as error:
        if settings.kubeconfig is None:  # the library speaks of its parameters; this service of its variables
            error = ConfigError(f"{error}. Here: set KUBECONFIG=PATH to run the data store outside a cluster")
        return refuse_to_start("data-store", error)
    log.info("checking callers with %r", reviewer)
    serve(make_app(reviewer), address=settings.address, port=settings.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
