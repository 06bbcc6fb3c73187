"""The HTTPS admission server: a thin aiohttp shell around :func:`webhook.core.review.review_body`.

Two listeners: HTTPS for ``POST /mutate`` (and the probes, for clusters that probe over HTTPS), and
an optional plain-HTTP port for ``/healthz``, ``/readyz`` and ``/metrics``, which never serves
``/mutate``. Request errors map to HTTP in one place (``RequestError.status``); anything else is a
bug, logged with its traceback and answered as a bare 500.

Shutdown on SIGTERM: readiness fails at once, the server keeps answering for ``drain_seconds`` (so
Service endpoints drop it while it still works, and each answer closes its connection so that
clients reconnect elsewhere), then stops listening and lets requests in flight finish.
"""

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook.core.contract import Contract
from webhook.core.document import decode
from webhook.core.review import AbsentFrom, Reviewed, review, review_body
from webhook.core.service_accounts import SERVICE_ACCOUNTS_PATH, account_of_review
from webhook.errors import PayloadTooLarge, RequestError, RequestTimeout, ServiceAccountOptInOff, UnsupportedMediaType
from webhook.server import logs
from webhook.server.metrics import Metrics
from webhook.server.service_accounts import ServiceAccountCache
from webhook.server.settings import ServerSettings
from webhook.server.tls import CertificateReloader

log = logging.getLogger("token_projector.server")

MUTATE_PATH = "/mutate"

ReviewBody = Callable[[bytes, Contract], Reviewed]
"""What answers a body: :func:`webhook.core.review.review_body`, or a benchmark's fake of it."""


@dataclass
class Lifecycle:
    """Readiness as the probes report it; ``draining`` once SIGTERM has arrived."""

    ready: bool = False
    draining: bool = False


SETTINGS = web.AppKey("settings", ServerSettings)
CONTRACT = web.AppKey("contract", Contract)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
RELOADER = web.AppKey("reloader", CertificateReloader)
REVIEW: web.AppKey[ReviewBody] = web.AppKey("review")
ACCOUNTS = web.AppKey("service_accounts", ServiceAccountCache)


def make_admission_app(
    settings: ServerSettings,
    contract: Contract,
    *,
    reloader: CertificateReloader,
    metrics: Metrics,
    lifecycle: Lifecycle,
    review: ReviewBody = review_body,
) -> web.Application:
    # aiohttp enforces client_max_size while reading; we also check Content-Length up front.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS], app[CONTRACT], app[METRICS], app[LIFECYCLE], app[RELOADER], app[REVIEW] = (
        settings,
        contract,
        metrics,
        lifecycle,
        reloader,
        review,
    )
    app.router.add_post(MUTATE_PATH, mutate)
    app.router.add_post(SERVICE_ACCOUNTS_PATH, mutate)
    _add_probes(app)
    app.cleanup_ctx.append(_watch_certificates)
    if settings.service_account_opt_in:
        app.cleanup_ctx.append(_watch_service_accounts)
    return app


def runner_options(settings: ServerSettings) -> dict[str, Any]:
    """AppRunner options for the admission app (aiohttp's keep-alive timer doubles as the header deadline)."""
    return {
        "access_log": None,  # our own log line per request replaces it
        "handle_signals": False,
        "shutdown_timeout": settings.shutdown_timeout_seconds,
        "keepalive_timeout": settings.keepalive_timeout_seconds,
    }


def make_probe_app(*, metrics: Metrics, lifecycle: Lifecycle) -> web.Application:
    app = web.Application()
    app[METRICS], app[LIFECYCLE] = metrics, lifecycle
    _add_probes(app)
    app.router.add_get("/metrics", metrics_view)
    return app


def _add_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def mutate(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    settings, metrics, lifecycle = app[SETTINGS], app[METRICS].requests, app[LIFECYCLE]
    metrics.in_flight += 1
    outcome, code, reviewed, refusal = "error", 500, None, ""
    try:
        try:
            raw = await _read_body(request, settings)
            if request.path == SERVICE_ACCOUNTS_PATH:
                reviewed = await _review_with_service_account(raw, app)
            else:
                reviewed = app[REVIEW](raw, app[CONTRACT])
        except RequestError as error:
            code, refusal = error.status, str(error)
            return _json_response({"error": refusal, "code": code}, status=code, lifecycle=lifecycle)
        outcome, code = reviewed.outcome, 200
        return _json_response(reviewed.response, lifecycle=lifecycle)
    except Exception:
        log.exception("unexpected error while answering an admission review")
        return _json_response(
            {"error": "internal error; see the webhook's logs", "code": 500}, status=500, lifecycle=lifecycle
        )
    finally:
        elapsed = time.perf_counter() - started
        metrics.in_flight -= 1
        metrics.answered(outcome, code, seconds=elapsed)
        if log.isEnabledFor(logging.INFO):  # the fields cost a few µs: build them only to log them
            fields = _log_fields(reviewed, refusal=refusal)
            fields.update(outcome=outcome, code=code, latency_ms=round(elapsed * 1000, 3))
            logs.info_line(log, "admission review", fields)


async def _review_with_service_account(raw: bytes, app: web.Application) -> Reviewed:
    """The review with the Pod's ServiceAccount as the cache (or a bounded GET) has it."""
    cache = app.get(ACCOUNTS)
    if cache is None:
        raise ServiceAccountOptInOff(
            f"{SERVICE_ACCOUNTS_PATH} is called but ServiceAccount opt-in is off: set --service-account-opt-in "
            "(TOKEN_PROJECTOR_SERVICE_ACCOUNT_OPT_IN=true) or remove the webhook entry that calls this path"
        )
    body = decode(raw)
    wanted = account_of_review(body)
    account = await cache.lookup(*wanted) if wanted is not None else None
    return review(body, app[CONTRACT], absent=AbsentFrom(raw), service_account=account)


def _log_fields(reviewed: Reviewed | None, *, refusal: str) -> dict[str, object]:
    """Who and what a request's log line names: never the Pod, its env values or a token."""
    if reviewed is None:
        return {"error": refusal} if refusal else {}
    fields: dict[str, object] = {
        "uid": reviewed.uid,
        "namespace": reviewed.namespace,
        "pod": reviewed.pod,
        "operation": reviewed.operation,
    }
    response = reviewed.response["response"]
    if not response["allowed"]:
        fields["reason"] = response["status"]["message"]
    if "warnings" in response:
        fields["warnings"] = len(response["warnings"])
    return fields


async def _read_body(request: web.Request, settings: ServerSettings) -> bytes:
    # The header as the API server sends it is compared first, as is; parsing is for other clients.
    if request.headers.get(hdrs.CONTENT_TYPE) != "application/json" and request.content_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {request.content_type or 'none'}")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {settings.max_body_bytes}")
    try:
        if request.content.is_eof():
            raw = await request.read()  # the whole body came with the headers: nothing to wait for
        else:
            async with asyncio.timeout(settings.read_timeout_seconds):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {settings.max_body_bytes} bytes") from None
    except TimeoutError:
        raise RequestTimeout(f"body not received within {settings.read_timeout_seconds:g} seconds") from None
    return raw


def _json_response(data: object, *, status: int = 200, lifecycle: Lifecycle) -> web.Response:
    response = web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
    if lifecycle.draining:
        response.force_close()  # while draining, send each client to a replica that is staying
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503)


async def metrics_view(request: web.Request) -> web.Response:
    registry = request.app[METRICS].registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _watch_service_accounts(app: web.Application) -> AsyncIterator[None]:
    """The ServiceAccount cache, listed and watched for as long as the app runs."""
    cache = ServiceAccountCache(app[SETTINGS], app[CONTRACT], metrics=app[METRICS])
    await cache.start()
    app[ACCOUNTS] = cache
    task = asyncio.create_task(cache.run())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cache.close()


async def _watch_certificates(app: web.Application) -> AsyncIterator[None]:
    """Poll the certificate files for as long as the app runs."""
    reloader, metrics, interval = app[RELOADER], app[METRICS], app[SETTINGS].cert_reload_seconds

    def publish() -> None:
        if reloader.status.not_after is not None:
            metrics.certificate_not_after.set(reloader.status.not_after.timestamp())

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            result = reloader.check()
            if result == "reloaded":
                metrics.certificate_reloads.labels("success").inc()
                publish()
            elif result == "failed":
                metrics.certificate_reloads.labels("failure").inc()

    publish()
    task = asyncio.create_task(watch())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_server(
    settings: ServerSettings,
    contract: Contract,
    *,
    stop: asyncio.Event | None = None,
    review: ReviewBody = review_body,
) -> None:
    """Serve until ``stop`` is set (by SIGTERM or SIGINT when not given), then drain and return."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloader = CertificateReloader(settings.cert_file, settings.key_file)
    metrics, lifecycle = Metrics(), Lifecycle()
    app = make_admission_app(settings, contract, reloader=reloader, metrics=metrics, lifecycle=lifecycle, review=review)
    runners = [web.AppRunner(app, **runner_options(settings))]
    await runners[0].setup()
    await web.TCPSite(runners[0], settings.address, settings.port, ssl_context=reloader.listening_context).start()
    if settings.probe_port:
        runners.append(
            web.AppRunner(make_probe_app(metrics=metrics, lifecycle=lifecycle), access_log=None, handle_signals=False)
        )
        await runners[1].setup()
        await web.TCPSite(runners[1], settings.address, settings.probe_port).start()
    # Start-up objects (modules, the app, TLS contexts) live forever. Freezing them keeps CPython's
    # full collections, which a burst of large Pods triggers, from rescanning them again and again:
    # measured, this takes the large-Pod p99 at one connection from ~20-30 ms down to ~6 ms.
    gc.collect()
    gc.freeze()
    # Ready without waiting for the ServiceAccount list: only /mutate/service-accounts needs it, and until
    # it is in, each of its lookups is a direct GET that fails closed (missing RBAC for serviceaccounts
    # refuses the opted-in namespaces' Pods, saying so, and nothing else).
    lifecycle.ready = not stop.is_set()
    log.info(
        "serving",
        extra={
            "fields": {
                "address": settings.address,
                "port": settings.port,
                "probe_port": settings.probe_port,
                "certificate_not_after": str(reloader.status.not_after),
            }
        },
    )
    await stop.wait()
    lifecycle.ready, lifecycle.draining = False, True
    log.info("draining", extra={"fields": {"drain_seconds": settings.drain_seconds}})
    await asyncio.sleep(settings.drain_seconds)
    # cleanup() stops listening, closes idle connections and waits up to shutdown_timeout for
    # the requests in flight to finish.
    for runner in runners:
        await runner.cleanup()
    log.info("stopped")


def serve(settings: ServerSettings, contract: Contract, *, review: ReviewBody = review_body) -> None:
    """Serve with the process's logs configured, until SIGTERM or SIGINT."""
    logs.configure(settings.log_level)
    try:
        asyncio.run(run_server(settings, contract, review=review))
    finally:
        logging.shutdown()  # writes the log lines still buffered
