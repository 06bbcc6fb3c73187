"""``token-projector proxy``: the verifying sidecar (inbound) or the token-adding one (``--outbound``).

The proxy itself is ``audience_token.proxy`` (the workload library, which never imports the webhook);
this command adds what the webhook's server already has: settings from flags and environment variables
(``ProxySettings``, defined once), JSON logs, and a TLS listener whose certificate is reloaded when it
changes (``webhook.server.tls.CertificateReloader``).
"""

import argparse
import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from webhook.cli.options import add_arguments, load
from webhook.core.contract import bad_setting, setting
from webhook.errors import ConfigError
from webhook.server.settings import check_ports

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from audience_token.proxy import ProxyLimits
    from webhook.server.tls import CertificateReloader

log = logging.getLogger("token_projector.proxy")


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    """How ``token-projector proxy`` listens, what it verifies and where it forwards.

    The defaults the library also has (``ProxyLimits``, ``Listen``, ``ReviewerSettings``) are restated,
    not read: importing ``audience_token`` loads aiohttp, which ``review`` must not, and the command line
    must build without the library (the ``proxy`` extra). tests/proxy holds each one equal to the library's.
    """

    outbound: bool = setting(
        False,
        "Outbound mode: add this Pod's token to each request from the app and forward it to --target "
        "(instead of verifying callers in front of --upstream).",
    )
    address: str = setting(
        "", "Address to listen on; none means 0.0.0.0 inbound and 127.0.0.1 outbound (which accepts only loopback)."
    )
    port: int = setting(8443, "Port the proxy listens on (the Pod's named port that the Service targets).")
    probe_port: int = setting(8444, "Plain-HTTP port for /healthz, /readyz and /metrics; 0 turns it off.")
    upstream: str = setting("", "Inbound: the app on loopback, such as http://127.0.0.1:8080.")
    audience: str = setting("", "Inbound: the audience a caller's token must be for (this service's name).")
    allow: tuple[str, ...] = setting(
        (), "Inbound: callers let in, comma-separated NAMESPACE/SERVICEACCOUNT patterns ('*' for a whole part)."
    )
    open_paths: tuple[str, ...] = setting(
        (), "Inbound: exact request paths forwarded without a token, comma-separated (such as /healthz)."
    )
    verification: Literal["tokenreview", "offline"] = setting(
        "tokenreview",
        "Inbound: tokenreview asks the API server about each new token; offline checks it against the "
        "cluster's published keys (revocation unseen until the token's exp).",
    )
    verdict_cache_seconds: float = setting(
        10.0,
        "Tokenreview: seconds a verdict is kept (never past the token's exp): a revoked token still "
        "passes for at most this long, and a token costs one TokenReview per this long.",
    )
    kubeconfig: str = setting("", "Kubeconfig for the proxy's own API access; none means in-cluster (the Pod's).")
    issuer: str = setting("", "Offline: the cluster's service account issuer URL, when not read from the API server.")
    target: str = setting(
        "", "Outbound: the one origin requests go to, such as https://secret-store.team.svc:8443 (http: loopback only)."
    )
    token_path: str = setting(
        "", "Outbound: the token file; none means $SERVICE_ACCOUNT_TOKEN_PATH, as token-projector sets it."
    )
    target_ca_file: str = setting("", "Outbound: PEM CA bundle for an https target; none means the system's.")
    tls_cert_file: str = setting(
        "", "PEM certificate chain for a TLS listener (reloaded when it changes); none means plain HTTP."
    )
    tls_key_file: str = setting("", "PEM private key of that certificate.")
    cert_reload_seconds: float = setting(2.0, "How often the certificate and key files are checked for changes.")
    connect_timeout_seconds: float = setting(5.0, "Seconds to connect to the upstream (504 after it).")
    upstream_timeout_seconds: float = setting(
        60.0, "Seconds the upstream may stay silent, before its answer (504) or inside its body."
    )
    client_body_timeout_seconds: float = setting(
        60.0, "Seconds a client may stay silent while sending a request body (408 after it)."
    )
    upstream_connections: int = setting(100, "At most this many connections to the upstream; idle ones are reused.")
    max_header_bytes: int = setting(8190, "Longest request line or header field accepted (400 above it).")
    identity_header_prefix: str = setting(
        "X-Remote-", "Inbound: prefix of the identity headers (PREFIX-User, PREFIX-Group, PREFIX-Extra-*)."
    )
    keepalive_timeout_seconds: float = setting(75.0, "An idle client connection is closed after this many seconds.")
    drain_seconds: float = setting(
        5.0, "After SIGTERM: seconds the proxy keeps answering with /readyz failing, before it stops listening."
    )
    shutdown_timeout_seconds: float = setting(
        10.0, "After the drain: how long requests in flight may take to finish before the process exits."
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")

    def __post_init__(self) -> None:
        check_ports(self.port, self.probe_port)
        if self.outbound:
            if not self.target:
                bad_setting("target", self.target, allowed="the origin to send to, in --outbound mode")
            if self.address and not _is_loopback(self.address):
                bad_setting("address", self.address, allowed="a loopback address in --outbound mode")
        else:
            for name, example in (("upstream", "http://127.0.0.1:8080"), ("audience", "secret-store")):
                if not getattr(self, name):
                    bad_setting(name, "", allowed=f"set, such as {example}")
            if not self.allow:
                bad_setting("allow", "", allowed="one or more NAMESPACE/SERVICEACCOUNT patterns (write */* for all)")
        if self.cert_reload_seconds <= 0:  # 0 would check the files in a loop that never yields a moment
            bad_setting("cert_reload_seconds", self.cert_reload_seconds, allowed="a positive number of seconds")
        for name in ("drain_seconds", "shutdown_timeout_seconds", "verdict_cache_seconds"):
            if getattr(self, name) < 0:
                bad_setting(name, getattr(self, name), allowed="zero or more seconds")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            bad_setting("tls_key_file", self.tls_key_file, allowed="given together with --tls-cert-file")
        if self.log_level not in ("debug", "info", "warning", "error"):
            bad_setting("log_level", self.log_level, allowed="debug, info, warning or error")

    @property
    def listen_address(self) -> str:
        return self.address or ("127.0.0.1" if self.outbound else "0.0.0.0")


def _is_loopback(address: str) -> bool:
    try:
        return address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmd = commands.add_parser(
        "proxy",
        help="run the verifying sidecar in front of an app (or, with --outbound, the token-adding one)",
        description="Inbound: verify each caller's audience token and forward it to the app on loopback with "
        "X-Remote-User/Group/Extra-* headers. Outbound: add this Pod's token and forward to one target.",
    )
    add_arguments(cmd, ProxySettings)
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load(ProxySettings, args)
    _require_library()  # before anything starts: the one thing `pip install token-projector` alone lacks
    from webhook.server import logs  # aiohttp and the TLS stack: only the serving commands need them

    logs.configure(settings.log_level)
    try:
        asyncio.run(serve(settings))
    finally:
        logging.shutdown()
    return 0


def _require_library() -> None:
    """A ConfigError saying what to install when the workload library is not there."""
    try:
        import audience_token.proxy  # noqa: F401 - imported to see that it can be
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "audience_token":
            raise
        raise ConfigError(
            "token-projector proxy needs the audience-token library, which ships in token-projector's repository: "
            "pip install ./audience_token from a checkout (the image has it)"
        ) from None


async def serve(settings: ProxySettings, *, stop: asyncio.Event | None = None) -> None:
    """Build the proxy ``settings`` describe and serve it until ``stop`` (else SIGTERM/SIGINT)."""
    _require_library()
    from audience_token import proxy

    with _library_errors():
        app = await _proxy_app(settings)
    async with _certificate(settings, app) as ssl_context:
        listen = proxy.Listen(
            address=settings.listen_address,
            port=settings.port,
            probe_port=settings.probe_port,
            ssl_context=ssl_context,
            drain_seconds=settings.drain_seconds,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            keepalive_timeout=settings.keepalive_timeout_seconds,
        )
        with _library_errors():  # a port in use: the library's ConfigError names the address and port
            await proxy.serve(app, listen, stop=stop)


def limits_of(settings: ProxySettings) -> "ProxyLimits":
    from audience_token.proxy import ProxyLimits

    with _library_errors():
        return ProxyLimits(
            connect_timeout=settings.connect_timeout_seconds,
            upstream_timeout=settings.upstream_timeout_seconds,
            client_body_timeout=settings.client_body_timeout_seconds,
            upstream_connections=settings.upstream_connections,
            max_header_bytes=settings.max_header_bytes,
            identity_prefix=settings.identity_header_prefix,
        )


async def _proxy_app(settings: ProxySettings) -> "web.Application":
    import ssl

    from audience_token import ReviewerSettings, TokenReviewer, Verifier, proxy
    from audience_token.token_file import TokenFile

    limits = limits_of(settings)
    if settings.outbound:
        proxy.target_origin(settings.target)  # a wrong target is reported before the CA or the token is read
        try:
            context = ssl.create_default_context(cafile=settings.target_ca_file or None)
        except OSError as error:  # ssl.SSLError is one: a file that is not a PEM CA bundle
            bad_setting(
                "target_ca_file",
                settings.target_ca_file,
                allowed=f"a readable PEM CA bundle (it cannot be loaded: {error.strerror or error})",
            )
        token_file = TokenFile(settings.token_path or None)
        return proxy.outbound_proxy(token_file, target=settings.target, limits=limits, ssl_context=context)
    proxy.loopback_upstream(settings.upstream)  # a wrong upstream is reported before any credentials are read
    kubeconfig = settings.kubeconfig or None
    verifier: Verifier
    if settings.verification == "offline":
        from audience_token.offline import OfflineVerifier

        verifier = OfflineVerifier(
            settings.audience, allow=settings.allow, issuer=settings.issuer or None, kubeconfig=kubeconfig
        )
    else:
        cache = settings.verdict_cache_seconds
        verifier = TokenReviewer(
            settings.audience,
            allow=settings.allow,
            kubeconfig=kubeconfig,
            settings=ReviewerSettings(success_ttl=cache, failure_ttl=cache),
        )
    try:
        return proxy.reverse_proxy(verifier, upstream=settings.upstream, open_paths=settings.open_paths, limits=limits)
    except BaseException:
        await verifier.close()
        raise


class _library_errors:  # noqa: N801 - a context manager, reads as one
    """audience_token's ConfigError and TokenFileError become the command line's ConfigError (exit 2)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, _: object) -> None:
        from audience_token.errors import ConfigError as LibraryConfigError
        from audience_token.errors import TokenFileError

        if isinstance(error, LibraryConfigError | TokenFileError):
            raise ConfigError(str(error)) from None


@asynccontextmanager
async def _certificate(settings: ProxySettings, app: "web.Application") -> "AsyncIterator[ssl.SSLContext | None]":
    """The listener's TLS context, its files watched and reloaded while the proxy runs; None for plain HTTP."""
    if not settings.tls_cert_file:
        yield None
        return
    from audience_token.proxy import FORWARD
    from webhook.server.tls import CertificateReloader

    reloader = CertificateReloader(settings.tls_cert_file, settings.tls_key_file)
    counts = {"success": 0, "failure": 0}

    def samples() -> Iterator[str]:
        name = "token_projector_proxy_tls_certificate_reloads_total"
        yield f"# HELP {name} Attempts to load a changed certificate and key, by result."
        yield f"# TYPE {name} counter"
        for result, count in counts.items():
            yield f'{name}{{result="{result}"}} {count}'
        if reloader.status.not_after is not None:
            expiry = "token_projector_proxy_tls_certificate_not_after_timestamp_seconds"
            yield f"# HELP {expiry} Expiry of the certificate being served, as a Unix timestamp."
            yield f"# TYPE {expiry} gauge"
            yield f"{expiry} {reloader.status.not_after.timestamp()}"

    app[FORWARD].metrics.extra_lines.append(samples)
    task = asyncio.create_task(_watch(reloader, settings.cert_reload_seconds, counts))
    try:
        yield reloader.listening_context
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _watch(reloader: "CertificateReloader", every: float, counts: dict[str, int]) -> None:
    while True:
        await asyncio.sleep(every)
        result = reloader.check()
        if result == "reloaded":
            counts["success"] += 1
        elif result == "failed":
            counts["failure"] += 1
