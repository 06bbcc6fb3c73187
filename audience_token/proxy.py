"""A verifying reverse proxy for apps in any language, and an outbound proxy that adds the Pod's token.

Inbound (``reverse_proxy``): in front of an app on the Pod's loopback. Each request's bearer token is
checked exactly as :func:`audience_token.token_middleware` checks it (the same ``lookup()`` then
``verify()``, the same 401/403/503 answers with ``WWW-Authenticate``, ``Retry-After`` and a small JSON
body: the proxy runs that middleware, it does not restate it). A request that passes is forwarded with
``Authorization`` and every client-sent identity header removed, and the caller's identity added in the
headers of Kubernetes' front-proxy convention::

    X-Remote-User: system:serviceaccount:NS:NAME
    X-Remote-Group: system:serviceaccounts            (one header per group)
    X-Remote-Extra-Authentication.kubernetes.io%2Fpod-name: api-7d4b9
    X-Remote-Extra-Authentication.kubernetes.io%2Fpod-uid: ...
    X-Remote-Extra-Authentication.kubernetes.io%2Fcredential-id: JTI=...

Bodies stream both ways (a 100 MiB upload holds one chunk at a time), the upstream connections are
a bounded keep-alive pool, and a WebSocket upgrade is tunnelled byte for byte once verified. The app
down or too slow is said plainly: 502 / 504, with the same JSON shape.

Outbound (``outbound_proxy``): for callers that cannot be changed. Listens on loopback, replaces any
``Authorization`` with the Pod's current token (:class:`~audience_token.token_file.TokenFile`, re-read
as the kubelet rotates it) and forwards to one target origin only; redirects are returned, never
followed, so the token never crosses origins.

Serving both (listeners, probes, metrics, drain on SIGTERM): :func:`serve`. The command line
(``token-projector proxy``) adds TLS certificate reload and JSON logs around it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import json
import logging
import re
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from audience_token.answers import Gate, HttpRefusal
from audience_token.errors import ConfigError, TokenFileError, unexpected
from audience_token.identity import EXTRA_CREDENTIAL_ID, EXTRA_POD_NAME, EXTRA_POD_UID, Identity
from audience_token.kube import may_carry_a_token
from audience_token.middleware import IDENTITY, Verifier, token_middleware
from audience_token.token_file import TokenFile

log = logging.getLogger("audience_token.proxy")

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",  # answered by this proxy's own server; the pool speaks for itself to the app
        "host",  # the client's Host is set again explicitly (see _Forwarder.headers_for)
    }
)
"""Headers that describe one connection, not the message: never forwarded in either direction (RFC 9110 7.6.1)."""

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods a request may be sent twice with (RFC 9110 9.2.2): the only ones retried on a closed pooled connection."""

DEFAULT_IDENTITY_PREFIX: Final = "X-Remote-"
EXTRA_KEYS: Final = (EXTRA_POD_NAME, EXTRA_POD_UID, EXTRA_CREDENTIAL_ID)
"""The identity's extras forwarded as ``PREFIX + "Extra-" + percent-encoded key``, as kube-apiserver names them."""

_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Timeouts, pool and header bounds of either proxy. The command line restates these defaults (a test
    holds them equal)."""

    connect_timeout: float = 5.0
    """Seconds to open a connection to the upstream (504 after it)."""
    upstream_timeout: float = 60.0
    """Seconds the upstream may stay silent: before its answer's headers (504) and between body chunks."""
    client_body_timeout: float = 60.0
    """Seconds a client may stay silent while sending a request body (408 after it)."""
    upstream_connections: int = 100
    """At most this many connections to the upstream at once; idle ones are kept for the next request."""
    upstream_idle_seconds: float = 4.0
    """An idle pooled connection is closed after this long: below common app servers' own keep-alive (5 s)."""
    max_header_bytes: int = 8190
    """Longest request line and header field accepted from a client, or answer header from the upstream (400)."""
    identity_prefix: str = DEFAULT_IDENTITY_PREFIX
    """Prefix of the identity headers (``X-Remote-`` gives X-Remote-User, X-Remote-Group, X-Remote-Extra-*)."""

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "upstream_timeout", "client_body_timeout", "upstream_idle_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {getattr(self, name)}")
        if self.upstream_connections < 1:
            raise ConfigError(f"upstream_connections must be at least 1, not {self.upstream_connections}")
        if not 1024 <= self.max_header_bytes <= 1024 * 1024:
            raise ConfigError(f"max_header_bytes must be 1024 to 1048576, not {self.max_header_bytes}")
        prefix = self.identity_prefix
        if not prefix or not all(c.isalnum() or c == "-" for c in prefix) or not prefix.isascii():
            raise ConfigError(f"identity_prefix must be letters, digits and '-', such as 'X-Remote-', not {prefix!r}")


def loopback_upstream(url: str) -> str:
    """``url`` without a trailing '/', if it is ``http://`` to a loopback address; else ConfigError.

    The identity headers are trusted by the app only because nobody but this proxy can reach it on
    loopback; an upstream elsewhere would carry them over the network, where anyone can forge them.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.path not in ("", "/") or parts.query or parts.username:
        raise ConfigError(
            f"upstream {url!r} must be http://127.0.0.1:PORT (the app on this Pod's loopback): the identity "
            "headers can be trusted only where no one but the proxy can reach the app"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ConfigError(f"upstream {url!r} must name the app's port, such as http://127.0.0.1:8080")
    return f"http://{parts.netloc}"


def target_origin(url: str) -> str:
    """The origin (``scheme://host:port``) of the outbound target; ConfigError unless https (or http to
    loopback) with no path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
        raise ConfigError(f"target {url!r} must be an origin such as https://secret-store.team.svc:8443")
    if parts.path not in ("", "/"):
        raise ConfigError(f"target {url!r} must have no path: the caller's request path is kept as it is")
    if not may_carry_a_token(url):
        raise ConfigError(
            f"target {url!r} must be https:// (plain http is accepted for a loopback address only): each "
            "request carries this Pod's token, which must never cross a network in the clear"
        )
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------------------------
# Counts for /metrics (plain numbers, rendered when scraped: no lock, one event loop).

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass
class ProxyMetrics:
    """Requests by outcome and status, time to the answer's headers, requests in flight."""

    mode: str = "inbound"
    in_flight: int = 0
    answered: dict[tuple[str, int], int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    extra_lines: list[Callable[[], Iterable[str]]] = field(default_factory=list)
    """More samples (the command line's certificate reloads), rendered after these."""

    def count(self, outcome: str, status: int, seconds: float) -> None:
        key = (outcome, status)
        self.answered[key] = self.answered.get(key, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def render(self) -> str:
        name = "token_projector_proxy"
        lines = [
            f"# HELP {name}_requests_total Requests by outcome (forwarded, refused, open, upstream_error) and status.",
            f"# TYPE {name}_requests_total counter",
        ]
        for (outcome, status), count in sorted(self.answered.items()):
            lines.append(f'{name}_requests_total{{mode="{self.mode}",outcome="{outcome}",code="{status}"}} {count}')
        lines += [
            f"# HELP {name}_latency_seconds Time from a request's arrival to its answer's headers.",
            f"# TYPE {name}_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            cumulative += count
            lines.append(f'{name}_latency_seconds_bucket{{mode="{self.mode}",le="{bound}"}} {cumulative}')
        lines.append(f'{name}_latency_seconds_sum{{mode="{self.mode}"}} {self.latency_sum}')
        lines.append(f'{name}_latency_seconds_count{{mode="{self.mode}"}} {cumulative}')
        lines += [
            f"# HELP {name}_requests_in_flight Requests being answered now.",
            f"# TYPE {name}_requests_in_flight gauge",
            f'{name}_requests_in_flight{{mode="{self.mode}"}} {self.in_flight}',
        ]
        for more in self.extra_lines:
            lines.extend(more())
        return "\n".join(lines) + "\n"


@dataclass
class Lifecycle:
    """Readiness as /readyz reports it; ``draining`` once SIGTERM has arrived."""

    ready: bool = False
    draining: bool = False


# ---------------------------------------------------------------------------------------------------------
# Answers of the proxy's own (the verifier's come from the middleware).


def _answer(status: int, error: str, reason: str, message: str, *, lifecycle: Lifecycle | None = None) -> web.Response:
    response = web.json_response({"error": error, "reason": reason, "message": message}, status=status)
    if lifecycle is not None and lifecycle.draining:
        response.force_close()
    return response


class _GatewayAnswer(web.Response):
    """An answer of the proxy's own for an upstream that failed (502/504): counted as ``upstream_error``."""


class _ClientTooSlow(Exception):
    """The client stopped sending its request body."""


def _gateway_failure(upstream: str, error: BaseException, limits: ProxyLimits) -> tuple[int, str, str]:
    """Status, reason and message for a failure to get an answer from the upstream."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return (
            504,
            "upstream_connect_timeout",
            (f"the upstream at {upstream} did not accept a connection within {limits.connect_timeout:g} s"),
        )
    if isinstance(error, TimeoutError):
        return (
            504,
            "upstream_timeout",
            f"the upstream at {upstream} did not answer within {limits.upstream_timeout:g} s",
        )
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return 502, "upstream_closed", f"the upstream at {upstream} closed the connection without an answer"
    if isinstance(error, aiohttp.ClientResponseError):
        return (
            502,
            "upstream_invalid",
            (f"the upstream at {upstream} sent an answer that is not valid HTTP ({error.message[:120]})"),
        )
    if isinstance(error, aiohttp.ClientConnectorError):
        error = error.os_error
    if isinstance(error, OSError):
        why = error.strerror or type(error).__name__
        return (
            502,
            "upstream_unreachable",
            (f"the upstream at {upstream} cannot be reached ({why}): is the app running and listening on that port?"),
        )
    return 502, "upstream_error", f"the upstream at {upstream} failed ({type(error).__name__})"


async def _request_body(request: web.Request, idle_seconds: float) -> AsyncIterator[bytes]:
    """The client's body, chunk by chunk as it arrives: nothing is gathered, so memory stays flat."""
    content = request.content
    while True:
        try:
            async with asyncio.timeout(idle_seconds):
                chunk = await content.readany()
        except TimeoutError:
            raise _ClientTooSlow from None
        if not chunk:
            return
        yield chunk


def _connection_tokens(headers: Any) -> frozenset[str]:
    values = headers.getall(hdrs.CONNECTION, ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(","))


# ---------------------------------------------------------------------------------------------------------
# The forwarding both modes share.


class _Forwarder:
    """Sends a request to one origin through a bounded keep-alive pool and streams the answer back."""

    def __init__(self, origin: str, limits: ProxyLimits, *, ssl_context: ssl.SSLContext | bool, mode: str) -> None:
        self.origin = origin
        self.limits = limits
        self.metrics = ProxyMetrics(mode=mode)
        self.lifecycle = Lifecycle()
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.limits.upstream_connections,
            limit_per_host=0,
            keepalive_timeout=self.limits.upstream_idle_seconds,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.limits.connect_timeout, sock_read=self.limits.upstream_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # one caller's cookies must never reach another's request
            skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
            max_line_size=self.limits.max_header_bytes,
            max_field_size=self.limits.max_header_bytes,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers_for(self, request: web.Request, drop: Callable[[str], bool]) -> CIMultiDict[str]:
        """The client's end-to-end headers, less those ``drop`` names; ``X-Forwarded-*`` appended."""
        named = _connection_tokens(request.headers)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            key = name.lower()
            if key in HOP_BY_HOP or key in named or drop(key):
                continue
            out.add(name, value)
        if request.host:
            out[hdrs.HOST] = request.host
        peer = request.remote
        if peer:
            previous = request.headers.get(hdrs.X_FORWARDED_FOR)
            out[hdrs.X_FORWARDED_FOR] = f"{previous}, {peer}" if previous else peer
        out[hdrs.X_FORWARDED_PROTO] = request.scheme
        return out

    async def forward(self, request: web.Request, headers: CIMultiDict[str]) -> web.StreamResponse:
        session = self._session
        assert session is not None, "start() first"
        url = self.origin + request.rel_url.raw_path_qs
        body = _request_body(request, self.limits.client_body_timeout) if request.body_exists else None
        # A pooled connection the app had just closed: a bodiless request is sent again, if doing it twice is
        # harmless (RFC 9110 9.2.2). A POST or PATCH may have run already: its 502 is the caller's to judge.
        attempts = 2 if body is None and request.method in IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                upstream = await session.request(
                    request.method,
                    URL(url, encoded=True),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
                break
            except aiohttp.ServerDisconnectedError as error:
                if attempt + 1 < attempts:
                    continue
                return self._failed(error, request)
            except _ClientTooSlow:
                return self._too_slow()
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                if isinstance(error.__cause__ or error.__context__, _ClientTooSlow):
                    return self._too_slow()
                return self._failed(error, request)
        try:
            return await self._stream_back(request, upstream)
        finally:
            upstream.release()

    def _too_slow(self) -> web.Response:
        message = f"the request body stopped arriving for {self.limits.client_body_timeout:g} s"
        response = _answer(408, "request_timeout", "client_body_timeout", message)
        response.force_close()  # the rest of that body must never be read as the next request
        return response

    def _failed(self, error: BaseException, request: web.Request) -> web.Response:
        status, reason, message = _gateway_failure(self.origin, error, self.limits)
        return self.gateway_answer(status, reason, message, request, error=type(error).__name__)

    def gateway_answer(
        self, status: int, reason: str, message: str, request: web.Request, *, error: str = ""
    ) -> web.Response:
        fields = {"status": status, "reason": reason, "method": request.method, "path": request.path}
        log.warning("upstream failed", extra={"fields": {**fields, "error": error} if error else fields})
        code = "gateway_timeout" if status == 504 else "bad_gateway"
        response = _GatewayAnswer(
            body=json.dumps({"error": code, "reason": reason, "message": message}).encode(),
            status=status,
            content_type="application/json",
        )
        if self.lifecycle.draining:
            response.force_close()
        return response

    async def _stream_back(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        length = upstream.content_length
        small = length is not None and length <= _CHUNK and request.method != hdrs.METH_HEAD
        response: web.StreamResponse = (
            web.Response(status=upstream.status, reason=upstream.reason)
            if small
            else (web.StreamResponse(status=upstream.status, reason=upstream.reason))
        )
        named = _connection_tokens(upstream.headers)
        for name, value in upstream.headers.items():
            key = name.lower()
            if key in HOP_BY_HOP or key in named or (small and key == "content-length"):
                continue
            response.headers.add(name, value)
        if self.lifecycle.draining:
            response.force_close()
        if small:
            # A body of one chunk at most is read whole and sent with the headers: one write, not two.
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                return self._failed(error, request)
            assert isinstance(response, web.Response)
            response.body = body
            return response
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except ConnectionResetError:  # the client went away (aiohttp's ClientConnectionResetError is one)
            return response
        except (aiohttp.ClientError, TimeoutError) as error:
            # The status is sent: the only honest signal left is to cut the connection, so the client
            # sees a truncated body instead of a complete-looking one.
            log.warning(
                "the upstream broke off its answer",
                extra={"fields": {"error": type(error).__name__, "path": request.path, "status": upstream.status}},
            )
            if request.transport is not None:
                request.transport.abort()
            return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def tunnel(self, request: web.Request, headers: CIMultiDict[str]) -> web.StreamResponse:
        """A WebSocket upgrade: the handshake to the upstream, then bytes both ways until either side closes."""
        parts = urlsplit(self.origin)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=self.limits.max_header_bytes * 4)
        except TimeoutError:
            return self._failed(aiohttp.ConnectionTimeoutError(), request)
        except OSError as error:
            return self._failed(error, request)
        try:
            headers[hdrs.CONNECTION] = "Upgrade"
            headers[hdrs.UPGRADE] = request.headers.get(hdrs.UPGRADE, "websocket")
            head = [f"{request.method} {request.rel_url.raw_path_qs} HTTP/1.1"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            # The values as aiohttp decoded them (UTF-8, undecodable bytes kept as surrogates): the same bytes out.
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
            try:
                async with asyncio.timeout(self.limits.upstream_timeout):
                    raw = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError as error:
                return self._failed(error, request)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                return self._failed(aiohttp.ServerDisconnectedError(), request)
            answer = _upgrade_answer(raw)
            if answer is None:
                return self.gateway_answer(
                    502,
                    "upstream_invalid",
                    f"the upstream at {self.origin} answered the WebSocket upgrade with a status line or header "
                    "that is not valid HTTP",
                    request,
                )
            status, fields = answer
            if status != 101:
                return self.gateway_answer(
                    502,
                    "upgrade_refused",
                    f"the upstream at {self.origin} refused the WebSocket upgrade with status {status}",
                    request,
                )
            response = web.StreamResponse(status=101)
            for name, value in fields:
                if name.lower() not in ("connection", "upgrade", "content-length", "transfer-encoding"):
                    response.headers.add(name, value)
            response.headers[hdrs.CONNECTION] = "Upgrade"
            response.headers[hdrs.UPGRADE] = headers[hdrs.UPGRADE]
            response.force_close()
            await response.prepare(request)
            await self._splice(request, reader, writer)
            return response
        finally:
            writer.close()

    async def _splice(self, request: web.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport, protocol = request.transport, request.protocol
        if transport is None:
            return
        from_client = asyncio.StreamReader(limit=_CHUNK)
        from_client.set_transport(transport)  # pauses the client's socket when the app reads slowly
        protocol.set_parser(_Feed(from_client))  # type: ignore[arg-type]  # aiohttp's hook for upgraded bytes
        protocol.keep_alive(False)

        async def client_to_upstream() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await from_client.read(_CHUNK):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

        async def upstream_to_client() -> None:
            drain: Callable[[], Awaitable[None]] = protocol._drain_helper  # aiohttp's own flow control
            with contextlib.suppress(OSError, ConnectionError):
                while data := await reader.read(_CHUNK):
                    if transport.is_closing():
                        return
                    transport.write(data)
                    if transport.get_write_buffer_size() > _CHUNK:
                        await drain()

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


_STATUS_LINE: Final = re.compile(r"HTTP/1\.[01] ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_FIELD_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
"""RFC 9112's status line, field name (a token) and field value (no control character but tab): ASCII
digits only, so '1²1' is not a status, and no bare CR or LF, which would end the line in the answer."""


def _upgrade_answer(raw: bytes) -> tuple[int, list[tuple[str, str]]] | None:
    """The status and header fields of the upstream's answer to an upgrade (``raw`` ends in CRLF CRLF);
    None when any line of it is not valid HTTP/1.1."""
    lines = raw.decode("latin-1").split("\r\n")[:-2]
    status_line = _STATUS_LINE.fullmatch(lines[0]) if lines else None
    if status_line is None:
        return None
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            return None
        fields.append((name, value.strip(" \t")))
    return int(status_line[1]), fields


class _Feed:
    """What aiohttp feeds an upgraded connection's bytes to (``RequestHandler.set_parser``)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._reader.feed_eof()


def _refusal_response(refusal: HttpRefusal) -> web.Response:
    return web.Response(
        body=refusal.body, status=refusal.status, headers=refusal.headers, content_type=refusal.content_type
    )


def _no_tunnels() -> web.Response:
    return _answer(
        405,
        "method_not_allowed",
        "connect",
        "this proxy forwards requests to one origin; it opens no tunnels (CONNECT)",
    )


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket" and "upgrade" in _connection_tokens(
        request.headers
    )


# ---------------------------------------------------------------------------------------------------------
# The two apps.

FORWARD: Final = web.AppKey("audience_token.proxy.forwarder", _Forwarder)
_PASSED: Final = web.Response(status=299)
"""What the proxy's stand-in handler answers: the middleware let the request through."""


async def _passed(request: web.Request) -> web.StreamResponse:
    return _PASSED


def reverse_proxy(
    verifier: Verifier,
    *,
    upstream: str,
    open_paths: Iterable[str] = (),
    limits: ProxyLimits | None = None,
) -> web.Application:
    """An app that verifies each request's token for ``verifier.audience`` and forwards it to ``upstream``.

    ``upstream``: ``http://127.0.0.1:PORT`` (loopback only). ``open_paths``: exact request paths, as the
    client sends them, forwarded without a token (and without identity headers), such as ``/healthz``.
    """
    limits = limits or ProxyLimits()
    forwarder = _Forwarder(loopback_upstream(upstream), limits, ssl_context=False, mode="inbound")
    check = token_middleware(verifier)
    gate = Gate(verifier)
    open_set = frozenset(open_paths)
    prefix = limits.identity_prefix
    user_header, group_header, extra_prefix = f"{prefix}User", f"{prefix}Group", f"{prefix}Extra-"
    extra_headers = tuple((key, extra_prefix + quote(key, safe="")) for key in EXTRA_KEYS)
    # Any header that might be read as an identity: ours under any prefix, X-Remote-* whatever the prefix,
    # and the '_' spelling some servers fold into the same variable (CGI: HTTP_X_REMOTE_USER).
    stripped = tuple({prefix.lower(), DEFAULT_IDENTITY_PREFIX.lower()})

    def is_identity(key: str) -> bool:
        return key == "authorization" or key.replace("_", "-").startswith(stripped)

    async def handle(request: web.Request) -> tuple[web.StreamResponse, str]:
        headers = forwarder.headers_for(request, is_identity)
        outcome = "forwarded"
        if request.rel_url.raw_path in open_set:  # the raw path: '/%68ealthz' is not '/healthz' here
            outcome = "open"
        else:
            try:
                verdict = await check(request, _passed)
            except Exception as error:  # a defect in a verifier of one's own: the library's 503, never a 500
                verdict = _refusal_response(gate.refusal(unexpected(error)))
            if verdict is not _PASSED:
                return verdict, "refused"
            identity: Identity = request[IDENTITY]
            headers[user_header] = identity.username
            for group in identity.groups:
                headers.add(group_header, group)
            for key, header in extra_headers:
                for value in identity.extra.get(key, ()):
                    headers.add(header, value)
        if _is_upgrade(request):
            return await forwarder.tunnel(request, headers), outcome
        return await forwarder.forward(request, headers), outcome

    return _app(forwarder, handle, limits, close=verifier.close)


def outbound_proxy(
    token_file: TokenFile,
    *,
    target: str,
    limits: ProxyLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> web.Application:
    """An app for loopback callers: each request gets the Pod's current token and goes to ``target``'s origin.

    A request whose target is another origin (an absolute URL, as a forward proxy would be asked) is
    refused with 421: the token is for ``target`` only. Redirects come back to the caller unfollowed.
    """
    limits = limits or ProxyLimits()
    origin = target_origin(target)
    forwarder = _Forwarder(origin, limits, ssl_context=ssl_context or True, mode="outbound")
    target_host = urlsplit(origin).netloc

    def is_credential(key: str) -> bool:
        return key == "authorization"

    async def handle(request: web.Request) -> tuple[web.StreamResponse, str]:
        if request.raw_path.startswith(("http://", "https://")):  # absolute-form: a forward proxy's request
            asked = f"{request.url.scheme}://{request.url.raw_authority}"
            if asked != origin:
                message = f"this proxy adds its Pod's token for {origin} only, not for {asked[:200]}"
                return _answer(421, "misdirected_request", "other_origin", message), "refused"
        headers = forwarder.headers_for(request, is_credential)
        headers[hdrs.HOST] = target_host
        try:
            headers[hdrs.AUTHORIZATION] = "Bearer " + token_file.read()
        except TokenFileError as error:  # its message names the path and what to check
            return _answer(503, "temporarily_unavailable", "no_token", str(error)), "no_token"
        return await forwarder.forward(request, headers), "forwarded"

    async def nothing() -> None:
        return None

    return _app(forwarder, handle, limits, close=nothing)


def _app(
    forwarder: _Forwarder,
    handle: Callable[[web.Request], Awaitable[tuple[web.StreamResponse, str]]],
    limits: ProxyLimits,
    *,
    close: Callable[[], Awaitable[None]],
) -> web.Application:
    metrics, lifecycle = forwarder.metrics, forwarder.lifecycle

    async def counted(request: web.Request) -> web.StreamResponse:
        """``handle``, counted for /metrics; CONNECT refused; each answer closing its connection while draining."""
        started = time.perf_counter()
        metrics.in_flight += 1
        outcome, status = "error", 0
        answer: web.StreamResponse
        try:
            if request.method == hdrs.METH_CONNECT:
                answer, outcome = _no_tunnels(), "refused"
            else:
                answer, outcome = await handle(request)
            if isinstance(answer, _GatewayAnswer):
                outcome = "upstream_error"
            if lifecycle.draining and not answer.prepared:
                answer.force_close()
            status = answer.status
            return answer
        finally:
            metrics.in_flight -= 1
            metrics.count(outcome, status, time.perf_counter() - started)

    bounds = {"max_line_size": limits.max_header_bytes, "max_field_size": limits.max_header_bytes}
    app = web.Application(handler_args={**bounds, "logger": _server_log})
    app[FORWARD] = forwarder
    app.router.add_route("*", "/{path:.*}", counted)

    async def pool(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()
        await close()

    app.cleanup_ctx.append(pool)
    return app


class _MalformedRequests(logging.Filter):
    """aiohttp logs each request it cannot parse as an error with a traceback (and the message may quote the
    header, a token among them): here it is one INFO line naming the kind of fault, nothing of the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "a malformed request was refused (%s %s)", (error.code, type(error).__name__)
            record.exc_info, record.exc_text = None, None
        return True


_server_log = logging.getLogger("audience_token.proxy.http")
_server_log.addFilter(_MalformedRequests())


def probe_app(proxy: web.Application) -> web.Application:
    """``/healthz``, ``/readyz`` (503 while starting or draining) and ``/metrics`` of ``proxy``."""
    forwarder = proxy[FORWARD]

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if forwarder.lifecycle.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=forwarder.metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@dataclass(frozen=True, slots=True)
class Listen:
    """Where and how :func:`serve` listens and stops."""

    address: str = "0.0.0.0"
    port: int = 8443
    probe_port: int = 8444
    ssl_context: ssl.SSLContext | None = None
    drain_seconds: float = 5.0
    shutdown_timeout: float = 10.0
    keepalive_timeout: float = 75.0


async def serve(
    proxy: web.Application,
    listen: Listen,
    *,
    stop: asyncio.Event | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Serve ``proxy`` (and its probes) until ``stop`` is set, or SIGTERM/SIGINT when not given; then drain.

    Draining: /readyz fails at once and each answer closes its connection, for ``drain_seconds``; then
    the listener closes and requests in flight get ``shutdown_timeout`` seconds to finish.
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    forwarder = proxy[FORWARD]
    runner = web.AppRunner(
        proxy,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=listen.shutdown_timeout,
        keepalive_timeout=listen.keepalive_timeout,
    )
    await runner.setup()
    runners = [runner]
    try:
        await _listen_on(runner, listen.address, listen.port, listen.ssl_context)
        if listen.probe_port:
            probes = web.AppRunner(probe_app(proxy), access_log=None, handle_signals=False)
            await probes.setup()
            runners.append(probes)
            await _listen_on(probes, listen.address, listen.probe_port, None)
        forwarder.lifecycle.ready = True
        log.info(
            "serving",
            extra={
                "fields": {
                    "mode": forwarder.metrics.mode,
                    "port": listen.port,
                    "probe_port": listen.probe_port,
                    "upstream": forwarder.origin,
                    "tls": listen.ssl_context is not None,
                }
            },
        )
        if started is not None:
            started()
        await stop.wait()
        forwarder.lifecycle.ready, forwarder.lifecycle.draining = False, True
        log.info("draining", extra={"fields": {"drain_seconds": listen.drain_seconds}})
        await asyncio.sleep(listen.drain_seconds)
    finally:
        for each in runners:
            await each.cleanup()
        log.info("stopped")


async def _listen_on(runner: web.AppRunner, address: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
    """Serve ``runner`` on ``address:port``; a port in use or not allowed is a ConfigError naming both."""
    try:
        await web.TCPSite(runner, address, port, ssl_context=ssl_context).start()
    except OSError as error:
        raise ConfigError(f"cannot listen on {address}:{port}: {error.strerror or error}") from None
