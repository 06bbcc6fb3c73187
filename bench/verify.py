"""Benchmark of the receiver side of audience_token: a cache hit, the middleware under load, the cache's memory.

1. The cost of ``TokenReviewer.verify`` when the token is cached (target under 5 us), beside its parts:
   the HMAC of the key, and an empty ``await`` for scale. Median of 7 rounds of at least 0.2 s each.
2. An aiohttp app behind the middleware against the same app without it, with wrk: one token,
   keep-alive, loopback, the servers on CPU 0 and wrk on CPU 1 (as bench/load.py). Each round starts
   the three apps afresh and runs them bare, noop, bare, protected, bare: each app's ratio is its
   req/s over the mean of the bare runs just before and after it, and the figure is the median of the
   rounds' ratios (target >= 0.8x), with the lowest and highest beside it. The server's CPU time per
   request is shown too: its ratio is what the throughput ratio would be with the server's CPU saturated.
3. Memory with 100,000 distinct tokens: the resident size while verifying them, which must flatten
   once the cache holds ``cache_size`` entries (the default, 10,000).

The API server is a stand-in here (``BenchApi``: every TokenReview authenticated, on plain HTTP): only
the first verify of each token reaches it, and the real one is what the e2e tests are about.
4. With ``--instructions``: instructions per request of the three apps under callgrind, the figure
   that holds still on a busy machine (the meter of bench/instructions.py).
Usage: .venv/bin/python -m bench.verify [--seconds 3] [--rounds 5] [--no-load] [--no-memory] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler

from audience_token import Credentials, ReviewerSettings, TokenReviewer, identity_of, protect, token_middleware
from audience_token.cache import CacheKeys

REPO = Path(__file__).parents[1]
SERVER_CPU, LOAD_CPU = "0", "1"
AUDIENCE = "bench"
ROUNDS = 7


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bench_token(n: int = 0) -> str:
    """A token shaped and sized like a projected one (about 1 KB: RS256, Pod-bound claims)."""
    now = int(time.time())
    claims = {
        "aud": [AUDIENCE],
        "exp": now + 3600,
        "iat": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": f"{n:08d}-5b1c-4c1e-9d0b-6f1e2d3c4b5a",
        "kubernetes.io": {
            "namespace": "bench",
            "node": {"name": "worker-1", "uid": "3b0e6c1a-6a43-4c55-8f0e-3f6b1c9d2e10"},
            "pod": {"name": "caller-7d4b9c8f6-x2k4q", "uid": "0f6c1e1a-1111-4a7e-9d4c-2b5f0a9d0001"},
            "serviceaccount": {"name": "caller", "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
        },
        "nbf": now,
        "sub": "system:serviceaccount:bench:caller",
    }
    header = _b64(json.dumps({"alg": "RS256", "kid": "bench-key-id-0123456789abcdef"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(os.urandom(256))}"


class BenchApi:
    """A stand-in for kube-apiserver's TokenReview endpoint that authenticates every token (a fake)."""

    def __init__(self) -> None:
        self.reviews = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _review(self, request: web.Request) -> web.Response:
        self.reviews += 1
        review = await request.json()
        user = {
            "username": "system:serviceaccount:bench:caller",
            "uid": "9a8b7c6d",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:bench", "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/pod-name": ["caller-1"],
                "authentication.kubernetes.io/pod-uid": ["u"],
            },
        }
        status = {"authenticated": True, "user": user, "audiences": review["spec"]["audiences"]}
        return web.json_response({**review, "status": status}, status=201)

    async def start(self) -> BenchApi:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._review)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    def reviewer(self, **kwargs: Any) -> TokenReviewer:
        credentials = Credentials(server=f"http://127.0.0.1:{self.port}", source="BenchApi", token="bench")
        return TokenReviewer(AUDIENCE, allow="bench/*", credentials=credentials, **kwargs)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _per_call(call: Callable[[], Awaitable[object]]) -> float:
    """Median seconds per call over ROUNDS rounds of at least 0.2 s."""
    batch = 1000
    while True:
        started = time.perf_counter()
        for _ in range(batch):
            await call()
        if time.perf_counter() - started >= 0.2:
            break
        batch *= 2
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(batch):
            await call()
        rounds.append((time.perf_counter() - started) / batch)
    return statistics.median(rounds)


async def cache_hit() -> list[tuple[str, float]]:
    api = await BenchApi().start()
    token = bench_token()
    try:
        async with api.reviewer() as reviewer:
            await reviewer.verify(token)
            hit = await _per_call(lambda: reviewer.verify(token))
            request = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})
            middleware = token_middleware(reviewer)
            with_it = await _per_call(lambda: middleware(request, hello_caller))
            around = with_it - await _per_call(lambda: hello(request))
            assert api.reviews == 1, "every timed call was a cache hit"
    finally:
        await api.stop()
    keys = CacheKeys(AUDIENCE)

    async def key_only() -> bytes:
        return keys(token)

    async def nothing() -> None:
        return None

    return [
        (f"verify(), cache hit ({len(token)}-char token)", hit),
        ("middleware around a handler, cache hit (its own cost: with it less without it)", around),
        ("  of which: HMAC-SHA256 key of audience + token", await _per_call(key_only) - await _per_call(nothing)),
        ("  for scale: awaiting an empty coroutine", await _per_call(nothing)),
    ]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def memory(count: int = 100_000) -> list[tuple[int, float, int]]:
    """(tokens verified, resident MiB, cache entries) at checkpoints, verifying ``count`` distinct tokens.

    Resident size rather than tracemalloc, which slows the 100,000 reviews (loopback HTTP) tenfold.
    """
    api = await BenchApi().start()
    checkpoints = {0, 5_000, 10_000, 25_000, 50_000, 75_000, count}
    rows = []
    head, body, _ = bench_token().split(".")
    try:
        async with api.reviewer() as reviewer:
            await reviewer.verify(bench_token())  # the pool and the first allocations, before the baseline
            done = 0
            while True:
                if done in checkpoints:
                    gc.collect()
                    rows.append((done, rss_mib(), reviewer.cached))
                if done >= count:
                    break
                batch = [f"{head}.{body}.{_b64(i.to_bytes(8, 'big') * 32)}" for i in range(done, done + 200)]
                await asyncio.gather(*(reviewer.verify(t) for t in batch))
                done += len(batch)
            assert api.reviews == count + 1
    finally:
        await api.stop()
    return rows


# --- the load run: two servers in their own processes, wrk against each ----------------------------


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def hello_caller(request: web.Request) -> web.Response:
    identity_of(request)
    return web.Response(text="hello")


@web.middleware
async def noop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A middleware that does nothing: what aiohttp's middleware chain costs by itself."""
    return await handler(request)


def serve(kind: str, port: int, *, ttl: float = 10.0) -> None:
    """The benchmarked app, as its own process: ``bare``, ``noop`` or ``protected`` (with its BenchApi)."""

    async def run() -> None:
        app = web.Application()
        if kind == "protected":
            api = await BenchApi().start()
            app.router.add_get("/", hello_caller)
            protect(app, api.reviewer(settings=ReviewerSettings(success_ttl=ttl)))
        elif kind == "noop":
            app.router.add_get("/", hello)
            app.middlewares.append(noop_middleware)
        else:
            app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(run())


KINDS = {
    "bare": "app without the middleware",
    "noop": "  same app with a do-nothing middleware (aiohttp's chain alone)",
    "protected": "same app behind the token middleware",
}


def _pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else command


def _get(port: int, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def start(kind: str, token: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "bench.verify", "--serve", kind, str(port)]
    process = subprocess.Popen(_pinned(SERVER_CPU, command), cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while True:
        try:
            assert _get(port, {"Authorization": f"Bearer {token}"}) == 200
            if kind == "protected":
                assert _get(port, {}) == 401, "the protected app must refuse a request without a token"
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {kind} app did not start") from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (taskset execs the server: same pid)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, token: str, *, connections: int, seconds: int) -> tuple[float, int, int]:
    out = subprocess.run(
        _pinned(
            LOAD_CPU,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "-H",
                f"Authorization: Bearer {token}",
                f"http://127.0.0.1:{port}/",
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    return rps, requests, errors


@dataclass(frozen=True)
class LoadRow:
    app: str
    requests_per_second: float
    cpu_us_per_request: float
    errors: int
    ratio: float
    """Median over rounds of req/s relative to the bare app's runs just before and just after."""
    low: float
    high: float
    """The lowest and highest of those per-round ratios: how far one round can stray."""
    cpu_ratio: float
    """The bare app's CPU per request over this app's: the throughput ratio a saturated CPU would give."""


@dataclass(frozen=True)
class Run:
    kind: str
    rps: float
    cpu_per_request: float
    errors: int


def _bracketed(runs: list[Run], measure: Callable[[Run], float]) -> dict[str, list[float]]:
    """Each non-bare run's ``measure`` over the mean of the bare runs on either side of it, by kind.

    The bare app runs before and after every other run, so a machine that speeds up or slows down
    during a round moves both sides of each ratio alike: drift that is linear over two runs cancels.
    """
    ratios: dict[str, list[float]] = {}
    for i, run in enumerate(runs):
        if run.kind != "bare":
            before, after = runs[i - 1], runs[i + 1]
            assert before.kind == after.kind == "bare"
            ratios.setdefault(run.kind, []).append(measure(run) / ((measure(before) + measure(after)) / 2))
    return ratios


def load(*, seconds: int, rounds: int, connections: int) -> list[LoadRow]:
    """Rounds of wrk runs bare, noop, bare, protected, bare; each round with its servers started afresh.

    Fresh processes each round, so no one process's luck (where its heap and code landed) decides.
    """
    token = bench_token()
    sequence = ["bare", "noop", "bare", "protected", "bare"]
    runs: list[Run] = []
    for _ in range(rounds):
        servers = {kind: start(kind, token) for kind in KINDS}
        try:
            for kind in sequence:
                process, port = servers[kind]
                before = cpu_seconds(process.pid)
                rps, requests, bad = wrk(port, token, connections=connections, seconds=seconds)
                runs.append(Run(kind, rps, (cpu_seconds(process.pid) - before) / max(requests, 1), bad))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=20)
    rps_ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    for first in range(0, len(runs), len(sequence)):
        one_round = runs[first : first + len(sequence)]
        for kind, found in _bracketed(one_round, lambda run: run.rps).items():
            rps_ratios.setdefault(kind, []).extend(found)
        for kind, found in _bracketed(one_round, lambda run: 1 / run.cpu_per_request).items():
            cpu_ratios.setdefault(kind, []).extend(found)
    rows = []
    for kind, name in KINDS.items():
        mine = [run for run in runs if run.kind == kind]
        ratios = rps_ratios.get(kind, [1.0])
        rows.append(
            LoadRow(
                name,
                statistics.median(run.rps for run in mine),
                statistics.median(run.cpu_per_request for run in mine) * 1e6,
                sum(run.errors for run in mine),
                statistics.median(ratios),
                min(ratios),
                max(ratios),
                statistics.median(cpu_ratios.get(kind, [1.0])),
            )
        )
    return rows


def _send(conn: http.client.HTTPConnection, token: str, count: int) -> None:
    for _ in range(count):
        conn.request("GET", "/", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status


SOFTWARE_SHA256 = ("SHA256_Update", "SHA256_Final")
"""OpenSSL's SHA-256 entry points: under valgrind their cost is the portable code's, not SHA-NI's."""


def instructions(*, warmup: int = 200, first: int = 100, requests: int = 500) -> dict[str, tuple[float, float]]:
    """Instructions per request of each app under callgrind (bench/instructions_callgrind.py's meter).

    The figure that holds still on a busy machine. One keep-alive connection, one request at a time;
    ``warmup`` uncounted, then a window of ``first`` requests (A) and one of ``first + requests`` (B):
    ``(B - A) / requests`` cancels what a window costs besides its requests. The cache keeps the
    acceptance for an hour here, since a request under callgrind is some 50 times slower; at full
    speed the 10 s default costs one review per token per 10 s, nothing per request.

    Each app's figure comes with the part of it that is SHA-256 (the HMAC of the cache key). Valgrind
    does not emulate the CPU's SHA extensions, so under it OpenSSL hashes with its portable code, which
    takes several times the instructions SHA-NI needs: that part overstates what the hash costs natively.
    """
    from bench.instructions_callgrind import (
        Metered,
        idle_in_epoll,
        inclusive_costs,
        missing_tools,
        wait_until_blocked,
    )

    if missing_tools():
        raise SystemExit(f"--instructions needs {', '.join(missing_tools())} (apt-get install valgrind)")
    token = bench_token()
    counts: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="audience-token-instructions-") as folder:
        work = Path(folder)
        for kind in KINDS:
            port = free_port()
            command = [sys.executable, str(REPO / "bench" / "instructions_server.py"), "bench.verify"]
            metered = Metered.start(
                [*command, "--serve", kind, str(port), "--ttl", "3600"],
                out_file=work / f"{kind}.callgrind",
                log=work / f"{kind}.log",
                cwd=REPO,
                env={"PYTHONPATH": str(REPO)},
            )
            try:
                deadline = time.monotonic() + 600
                while True:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                        _send(conn, token, 1)
                        break
                    except OSError:
                        if metered.process.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(f"the {kind} app did not start under callgrind") from None
                        time.sleep(0.5)
                _send(conn, token, warmup)
                wait_until_blocked(metered.process.pid, idle_in_epoll)
                metered.instrument()
                metered.zero()
                _send(conn, token, first)
                wait_until_blocked(metered.process.pid, idle_in_epoll)
                window_a = metered.dump()
                _send(conn, token, first + requests)
                wait_until_blocked(metered.process.pid, idle_in_epoll)
                total = (metered.dump() - window_a) / requests
                a, b = (inclusive_costs(dump) for dump in metered.dumps[-2:])
                sha = sum(b.get(name, 0) - a.get(name, 0) for name in SOFTWARE_SHA256) / requests
                counts[kind] = (total, sha)
                conn.close()
            finally:
                metered.stop()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of bare/noop/bare/protected/bare (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    parser.add_argument("--no-load", action="store_true", help="skip the wrk runs")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100,000-token memory run (about 40 s)")
    parser.add_argument("--instructions", action="store_true", help="also count instructions per request (valgrind)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--ttl", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), ttl=args.ttl)
        return

    print(
        f"# audience_token receiver benchmark, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("\n| cache hit | us per call |\n| --- | --- |")
    for name, seconds in asyncio.run(cache_hit()):
        print(f"| {name} | {seconds * 1e6:.2f} |")

    if args.no_load:
        pass
    elif not shutil.which("wrk"):
        print("\n# wrk is not installed (apt-get install wrk; make bench-deps): the load rows are skipped")
    else:
        print(
            f"\n# wrk: 1 thread, {args.connections} keep-alive connections, one token, {args.rounds} rounds of "
            f"bare/noop/bare/protected/bare x {args.seconds}s, fresh servers each round, on CPU {SERVER_CPU}, wrk "
            f"on CPU {LOAD_CPU}; ratio: median of each run's ratio to the bare runs either side (lowest-highest)"
        )
        print(
            "\n| app | req/s | non-2xx | req/s ratio | (lowest-highest) | server CPU us/request | CPU ratio |"
            "\n| --- | --- | --- | --- | --- | --- | --- |"
        )
        for row in load(seconds=args.seconds, rounds=args.rounds, connections=args.connections):
            print(
                f"| {row.app} | {row.requests_per_second:,.0f} | {row.errors} | {row.ratio:.2f}x | "
                f"{row.low:.2f}-{row.high:.2f} | {row.cpu_us_per_request:.1f} | {row.cpu_ratio:.2f}x |"
            )

    if args.instructions:
        counts = instructions()
        print("\n# callgrind, one keep-alive connection, one request at a time, 500 requests counted per app")
        print(
            "\n| app | instructions per request | ratio | of which SHA-256 in software (no SHA-NI under valgrind) |"
            "\n| --- | --- | --- | --- |"
        )
        for kind, name in KINDS.items():
            total, sha = counts[kind]
            print(f"| {name} | {total:,.0f} | {counts['bare'][0] / total:.2f}x | {sha:,.0f} |")

    if args.no_memory:
        return
    print("\n| distinct tokens verified | resident MiB | cache entries |\n| --- | --- | --- |")
    for done, mib, cached in asyncio.run(memory()):
        print(f"| {done:,} | {mib:.1f} | {cached:,} |")


if __name__ == "__main__":
    main()
