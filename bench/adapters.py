"""Benchmark of the receiver adapters: what each adds per request on a cache hit, beside aiohttp's middleware.

For each framework, the same "hello" app is called in-process (no socket: only the framework's and the
adapter's own work) without the adapter and with it, on a token already cached:

- aiohttp: the application's own request path (``Application._handle``: router, middleware chain, handler,
  on a fresh ``Request`` per call, built as the server builds one) without and with ``token_middleware``; and, for
  scale, with a middleware that does nothing (what aiohttp's chain costs for any middleware);
- ASGI: Starlette behind ``audience_token.asgi.AudienceTokenMiddleware``;
- FastAPI: a route with and without the ``Caller`` dependency; and, for scale, with a do-nothing ``Security``
  dependency of the same shape (a ``SecurityBase`` taking the request), which is what FastAPI charges for any;
- WSGI: Flask with ``app.wsgi_app`` behind ``audience_token.wsgi.AudienceTokenMiddleware``;
- Django: the WSGI handler with an empty ``MIDDLEWARE`` and with ``audience_token.django``'s.

Every adapter's added cost is also given as a ratio to the aiohttp middleware's, measured in the same run.

Two figures per adapter: microseconds (median of 7 rounds of at least 0.2 s each, bare and protected
alternating), and, with ``--instructions``, CPU instructions per request under callgrind (a child process
driven through its standard input; the counted window is the same batch of N requests for both apps, so
everything but the requests cancels out). Also: a cache hit from a plain thread (``SyncVerifier.verify``)
and from a task (``TokenReviewer.verify``), whose target is under 5 us each.

The API server is bench/verify.py's ``BenchApi`` (a fake that authenticates every token), asked once.
Usage: .venv/bin/python -m bench.adapters [--instructions] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler, Middleware
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security.base import SecurityBase

from audience_token import ReviewerSettings, TokenReviewer, token_middleware
from audience_token.sync import SyncVerifier
from bench.verify import AUDIENCE, BenchApi, bench_token, hello, hello_caller, noop_middleware

ROUNDS = 7
KEPT = ReviewerSettings(success_ttl=3600)
"""Verdicts kept for the whole run, so that every timed request is a cache hit."""
Batch = Callable[[int], None]


@dataclass
class Subject:
    """One framework's app, bare and behind its adapter, each run ``n`` times in a row."""

    name: str
    bare: Batch
    protected: Batch


class ApiThread:
    """The BenchApi on its own event loop in a daemon thread, for the verifiers' one real review."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.api = asyncio.run_coroutine_threadsafe(BenchApi().start(), self.loop).result(30)
        self.warmed: list[TokenReviewer] = []

    def warm(self, reviewer: TokenReviewer, token: str) -> None:
        asyncio.run_coroutine_threadsafe(reviewer.verify(token), self.loop).result(30)
        self.warmed.append(reviewer)

    def close(self) -> None:
        for reviewer in self.warmed:
            asyncio.run_coroutine_threadsafe(reviewer.close(), self.loop).result(30)
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(30)


def _async_batch(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[object]]) -> Batch:
    def run(n: int) -> None:
        async def many() -> None:
            for _ in range(n):
                await call()

        loop.run_until_complete(many())

    return run


def _wsgi_batch(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Batch:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        assert status.startswith("200"), status

    def run(n: int) -> None:
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return run


def _scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }


def _environ(token: str) -> dict[str, Any]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_HOST": "127.0.0.1"}
    setup_testing_defaults(environ)
    return environ


def subjects(api: ApiThread, token: str) -> list[Subject]:
    """Every adapter's bare and protected app, their verifiers' caches already holding ``token``."""
    reviewer = api.api.reviewer(settings=KEPT)
    api.warm(reviewer, token)
    loop = asyncio.new_event_loop()
    found = [_aiohttp(loop, reviewer, token), _aiohttp_scale(loop, token), _asgi(loop, reviewer, token)]
    found += [_fastapi(loop, reviewer, token), _fastapi_scale(loop, token)]
    found += [_flask(reviewer, token), _django(api, token)]
    return found


AIOHTTP = "aiohttp (token_middleware)"
"""The row every other adapter's added cost is compared with."""


def _aiohttp_app(loop: asyncio.AbstractEventLoop, token: str, handler: Handler, middlewares: list[Middleware]) -> Batch:
    """``n`` requests through an aiohttp application's request path, each on a fresh ``Request``."""
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", handler)
    app.freeze()

    async def make() -> web.Request:
        return make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"}, app=app)

    mocked = loop.run_until_complete(make())
    # What a Request reads of the server's connection (RequestHandler) when built; a Mock's attributes cost ~10 us.
    connection: Any = SimpleNamespace(ssl_context=None, peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 80))
    parts = (mocked._message, mocked._payload, connection, mocked._payload_writer, mocked._task, loop)

    async def call() -> None:
        response = await app._handle(web.Request(*parts))  # as the server's protocol builds each request
        assert response.status == 200, response.status

    return _async_batch(loop, call)


def _aiohttp(loop: asyncio.AbstractEventLoop, reviewer: TokenReviewer, token: str) -> Subject:
    return Subject(
        AIOHTTP,
        _aiohttp_app(loop, token, hello, []),
        _aiohttp_app(loop, token, hello_caller, [token_middleware(reviewer)]),
    )


def _aiohttp_scale(loop: asyncio.AbstractEventLoop, token: str) -> Subject:
    """aiohttp's own cost of one middleware, which any middleware brings: one that does nothing."""
    return Subject(
        "  for scale: aiohttp, a do-nothing middleware",
        _aiohttp_app(loop, token, hello, []),
        _aiohttp_app(loop, token, hello, [noop_middleware]),
    )


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    if message["type"] == "http.response.start":
        assert message["status"] == 200, message


def _asgi(loop: asyncio.AbstractEventLoop, reviewer: TokenReviewer, token: str) -> Subject:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from audience_token.asgi import AudienceTokenMiddleware, identity_of

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def caller(request: Request) -> PlainTextResponse:
        identity_of(request)
        return PlainTextResponse("hello")

    bare = Starlette(routes=[Route("/", plain)])
    protected = AudienceTokenMiddleware(Starlette(routes=[Route("/", caller)]), reviewer)
    scope = _scope(token)
    return Subject(
        "ASGI (Starlette)",
        _async_batch(loop, lambda: bare(dict(scope), _receive, _send)),
        _async_batch(loop, lambda: protected(dict(scope), _receive, _send)),
    )


def _fastapi(loop: asyncio.AbstractEventLoop, reviewer: TokenReviewer, token: str) -> Subject:
    from fastapi import Depends, FastAPI
    from fastapi.responses import PlainTextResponse

    from audience_token import Identity
    from audience_token.fastapi import Caller

    bare, protected = FastAPI(), FastAPI()
    caller = Caller(reviewer)

    @bare.get("/", response_class=PlainTextResponse)
    async def plain() -> str:
        return "hello"

    @protected.get("/", response_class=PlainTextResponse)
    async def with_caller(who: Identity = Depends(caller)) -> str:  # noqa: B008 - FastAPI's way
        return "hello"

    scope = _scope(token)
    return Subject(
        "FastAPI (Caller dependency)",
        _async_batch(loop, lambda: bare(dict(scope), _receive, _send)),
        _async_batch(loop, lambda: protected(dict(scope), _receive, _send)),
    )


class _NothingScheme(SecurityBase):
    """A ``Security`` dependency that does nothing, of ``Caller``'s shape: a scheme taking the request.

    At module level: FastAPI resolves the string annotation ``HTTPConnection`` in the module's globals (inside a
    function it would not find it, and answer every request 422).
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "Nothing"

    async def __call__(self, request: HTTPConnection) -> None:
        return None


def _fastapi_scale(loop: asyncio.AbstractEventLoop, token: str) -> Subject:
    """FastAPI's own cost of one ``Security`` dependency, which any brings: one that does nothing."""
    from fastapi import FastAPI, Security
    from fastapi.responses import PlainTextResponse

    bare, with_nothing = FastAPI(), FastAPI()
    nothing = _NothingScheme()

    @bare.get("/", response_class=PlainTextResponse)
    async def plain() -> str:
        return "hello"

    @with_nothing.get("/", response_class=PlainTextResponse)
    async def with_dependency(_: None = Security(nothing)) -> str:
        return "hello"

    scope = _scope(token)
    return Subject(
        "  for scale: FastAPI, a do-nothing Security dependency",
        _async_batch(loop, lambda: bare(dict(scope), _receive, _send)),
        _async_batch(loop, lambda: with_nothing(dict(scope), _receive, _send)),
    )


def _flask(reviewer: TokenReviewer, token: str) -> Subject:
    from flask import Flask, request

    from audience_token.wsgi import AudienceTokenMiddleware, identity_of

    bare, protected = Flask("bare"), Flask("protected")

    @bare.get("/")
    def plain() -> str:
        return "hello"

    @protected.get("/")
    def caller() -> str:
        identity_of(request)
        return "hello"

    protected.wsgi_app = AudienceTokenMiddleware(protected.wsgi_app, SyncVerifier(reviewer))  # type: ignore[method-assign]
    environ = _environ(token)
    return Subject("WSGI (Flask)", _wsgi_batch(bare, environ), _wsgi_batch(protected, environ))


def django_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("hello")


urlpatterns: list[Any] = []


def _django(api: ApiThread, token: str) -> Subject:
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.urls import path

    from audience_token import Credentials

    credentials = Credentials(server=f"http://127.0.0.1:{api.api.port}", source="BenchApi", token="bench")
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        SECRET_KEY="bench",
        AUDIENCE_TOKEN={
            "audience": AUDIENCE,
            "allow": ["bench/*"],
            "credentials": credentials,
            "success_ttl": KEPT.success_ttl,
        },
    )
    django.setup()
    urlpatterns[:] = [path("", django_view)]
    bare = WSGIHandler()
    settings.MIDDLEWARE = ["audience_token.django.AudienceTokenMiddleware"]
    protected = WSGIHandler()
    environ = _environ(token)
    _wsgi_batch(protected, environ)(1)  # its own SyncVerifier asks the BenchApi once: later calls are hits
    return Subject("Django (middleware)", _wsgi_batch(bare, environ), _wsgi_batch(protected, environ))


def per_call(batch: Batch) -> Callable[[], float]:
    """A measurement of ``batch``: seconds per call over one round of at least 0.2 s."""
    n = 200
    while True:
        started = time.perf_counter()
        batch(n)
        if time.perf_counter() - started >= 0.2:
            break
        n *= 2

    def measure() -> float:
        started = time.perf_counter()
        batch(n)
        return (time.perf_counter() - started) / n

    return measure


def wall_clock(subject: Subject) -> tuple[float, float]:
    """Median microseconds per request, bare and protected, measured in alternating rounds."""
    bare, protected = per_call(subject.bare), per_call(subject.protected)
    rounds = [(bare(), protected()) for _ in range(ROUNDS)]
    return statistics.median(r[0] for r in rounds) * 1e6, statistics.median(r[1] for r in rounds) * 1e6


def cache_hits(api: ApiThread, token: str) -> list[tuple[str, float]]:
    reviewer = api.api.reviewer(settings=KEPT)
    api.warm(reviewer, token)
    verifier = SyncVerifier(reviewer)
    box: list[float] = []

    def hits(n: int) -> None:
        for _ in range(n):
            verifier.verify(token)

    def on_a_thread() -> None:
        measure = per_call(hits)
        box.append(statistics.median(measure() for _ in range(ROUNDS)))

    thread = threading.Thread(target=on_a_thread)
    thread.start()
    thread.join()
    loop = asyncio.new_event_loop()
    from_task = per_call(_async_batch(loop, lambda: reviewer.verify(token)))
    return [
        ("SyncVerifier.verify() from a plain thread", box[0] * 1e6),
        ("TokenReviewer.verify() from a task", statistics.median(from_task() for _ in range(ROUNDS)) * 1e6),
    ]


def _settle() -> None:
    """Move every object built so far out of the collector's sight: a full collection over three frameworks
    costs tens of millions of instructions and would land in whichever window it happens to fall in."""
    gc.collect()
    gc.freeze()


def child() -> None:
    """Under callgrind: build the subjects, then run ``NAME VARIANT N`` batches read from standard input."""
    api = ApiThread()
    by_name = {s.name: s for s in subjects(api, bench_token())}
    _settle()
    print("ready", flush=True)
    for line in sys.stdin:
        name, variant, n = line.rstrip("\n").rsplit(" ", 2)
        getattr(by_name[name], variant)(int(n))
        print("done", flush=True)


def instructions(names: list[str], *, requests: int) -> dict[str, tuple[float, float]]:
    """Instructions per request under callgrind, bare and protected, for each subject name."""
    from bench.instructions_callgrind import Metered, missing_tools, reading_stdin, wait_until_blocked

    missing = missing_tools()
    if missing:
        raise SystemExit(f"--instructions needs {', '.join(missing)} (make bench-deps)")
    counts: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        metered = Metered.start(
            [sys.executable, "-m", "bench.adapters", "--child"],
            out_file=Path(folder) / "callgrind.out",
            log=Path(folder) / "valgrind.log",
            pass_stdio=True,
            cwd=Path(__file__).parents[1],
        )
        assert metered.process.stdin is not None
        assert metered.process.stdout is not None
        stdin, stdout = metered.process.stdin, metered.process.stdout
        try:
            if stdout.readline() != b"ready\n":
                raise SystemExit((Path(folder) / "valgrind.log").read_text()[-3000:])
            metered.instrument()

            def window(name: str, variant: str, n: int) -> int:
                wait_until_blocked(metered.process.pid, reading_stdin)
                metered.zero()
                stdin.write(f"{name} {variant} {n}\n".encode())
                stdin.flush()
                assert stdout.readline() == b"done\n"
                wait_until_blocked(metered.process.pid, reading_stdin)
                return metered.dump()

            for name in names:
                pair = []
                for variant in ("bare", "protected"):
                    window(name, variant, 50)  # warm-up: first calls fill caches of the framework itself
                    pair.append(window(name, variant, requests) / requests)
                counts[name] = (pair[0], pair[1])
        finally:
            stdin.close()
            metered.stop()
    return counts


def against_aiohttp(figures: dict[str, tuple[float, float]], name: str) -> float:
    """What ``name``'s adapter adds per request, as a multiple of what the aiohttp middleware adds (same run)."""
    bare, protected = figures[name]
    aiohttp_bare, aiohttp_protected = figures[AIOHTTP]
    return (protected - bare) / (aiohttp_protected - aiohttp_bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", action="store_true", help="also count instructions under callgrind")
    parser.add_argument("--requests", type=int, default=1000, help="requests per counted window (callgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child()
        return
    api = ApiThread()
    token = bench_token()
    found = subjects(api, token)
    _settle()
    print("| adapter, cache hit | bare us/request | with it | added us | ratio | added, vs aiohttp's middleware |")
    print("| --- | --- | --- | --- | --- | --- |")
    timed = {subject.name: wall_clock(subject) for subject in found}
    for name, (bare, protected) in timed.items():
        print(f"| {name} | {bare:.1f} | {protected:.1f} | {protected - bare:.1f} | {bare / protected:.2f}x |", end="")
        print(f" {against_aiohttp(timed, name):.2f}x |")
    print()
    print("| cache hit | us per call |")
    print("| --- | --- |")
    for name, micros in cache_hits(api, token):
        print(f"| {name} | {micros:.2f} |")
    if arguments.instructions:
        print()
        print("| adapter, cache hit | bare instructions/request | with it | added | ratio | added, vs aiohttp's |")
        print("| --- | --- | --- | --- | --- | --- |")
        counted = instructions([s.name for s in found], requests=arguments.requests)
        for name, (bare_i, with_i) in counted.items():
            added, ratio = with_i - bare_i, against_aiohttp(counted, name)
            print(f"| {name} | {bare_i:,.0f} | {with_i:,.0f} | {added:,.0f} | {bare_i / with_i:.2f}x | {ratio:.2f}x |")
    api.close()


if __name__ == "__main__":
    main()
