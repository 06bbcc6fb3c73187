"""Benchmark: ``token-projector proxy`` beside kube-rbac-proxy v0.21.0, in front of the same upstream, in one run.

Each proxy runs alone on CPU 0 (kube-rbac-proxy with ``GOMAXPROCS=1``); the upstream (a small aiohttp
app), the API server's stand-in (``bench.verify.BenchApi``: every TokenReview authenticated, plain HTTP)
and wrk share CPU 1. Every request carries the same token, so after the first one both proxies answer
from their verdict cache, as they do in a steady state. Rows: the upstream alone, token-projector
proxy, kube-rbac-proxy; at 1 and 16 keep-alive connections: requests/s, p50 and p99 latency and the
latency each proxy adds over the upstream alone, and the proxy's resident memory after the runs.
Rounds alternate the three, each round with fresh processes; figures are medians of the rounds and
the ratio is token-projector's over kube-rbac-proxy's in the same round.

kube-rbac-proxy is not on the Go module proxy (it answers 403 for the module): build it from a copy of
its repository (docs/proxy.md) and pass the binary with ``--kube-rbac-proxy PATH``; without one, its
rows are skipped and the run says why. It is configured as the notes in docs/proxy.md say: the token's
audience required, a static authorization rule for the caller (no SubjectAccessReview per request).

Usage: .venv/bin/python -m bench.proxy [--kube-rbac-proxy PATH] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bench.verify import AUDIENCE, BenchApi, bench_token, cpu_seconds, free_port
from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CA_FILE, CERT_FILE, KEY_FILE

REPO = Path(__file__).parents[1]
PROXY_CPU, LOAD_CPU = "0", "1"
CALLER = "system:serviceaccount:bench:caller"
KINDS = ("upstream", "token-projector", "kube-rbac-proxy")


def _pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else command


# --- the upstream and the API server's stand-in, each in its own process on the load CPU ----------------------


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def serve_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _hello)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_api(port: int, certs: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / CERT_FILE, certs / KEY_FILE)

    async def run() -> None:
        api = BenchApi()
        api.port = port
        runner_app = web.Application()
        runner_app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", api._review)
        runner = web.AppRunner(runner_app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        await asyncio.Event().wait()

    asyncio.run(run())


# --- starting and measuring ---------------------------------------------------------------------------------


def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _wait(url: str, token: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while _status(url, token) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start (exit {process.poll()})")
        time.sleep(0.1)


def _spawn(command: list[str], *, cpu: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _pinned(cpu, command),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kubeconfig(folder: Path, api_port: int) -> Path:
    """Both proxies' credentials: the stand-in over HTTPS (the library takes no plain-HTTP API server)."""
    path = folder / "kubeconfig.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "bench",
                "clusters": [
                    {
                        "name": "bench",
                        "cluster": {
                            "server": f"https://127.0.0.1:{api_port}",
                            "certificate-authority": str(folder / CA_FILE),
                        },
                    }
                ],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
            }
        )
    )
    return path


def start_proxy(
    kind: str, *, upstream: int, config: Path, binary: Path | None, token: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if kind == "token-projector":
        command = [sys.executable, "-m", "webhook", "proxy", "--address", "127.0.0.1", "--port", str(port)]
        command += ["--probe-port", str(free_port()), "--upstream", f"http://127.0.0.1:{upstream}"]
        command += ["--audience", AUDIENCE, "--allow", "bench/*", "--kubeconfig", str(config), "--log-level", "warning"]
        process = _spawn(command, cpu=PROXY_CPU)
    else:
        assert binary is not None
        rules = config.parent / "kube-rbac-proxy.yaml"
        rules.write_text(
            json.dumps(
                {
                    "authorization": {
                        "static": [{"user": {"name": CALLER}, "verb": "get", "path": "/", "resourceRequest": False}]
                    }
                }
            )
        )
        command = [
            str(binary),
            f"--insecure-listen-address=127.0.0.1:{port}",
            f"--upstream=http://127.0.0.1:{upstream}/",
            f"--kubeconfig={config}",
            f"--auth-token-audiences={AUDIENCE}",
            f"--config-file={rules}",
            "--v=0",
        ]
        process = _spawn(command, cpu=PROXY_CPU, env={"GOMAXPROCS": "1"})
    _wait(f"http://127.0.0.1:{port}/", token, process, kind)
    if _status(f"http://127.0.0.1:{port}/", None) != 401:
        raise SystemExit(f"{kind} must refuse a request without a token")
    return process, port


@dataclass(frozen=True)
class Measured:
    rps: float
    p50_us: float
    p99_us: float
    errors: int
    requests: int
    cpu_us: float = float("nan")
    """The proxy's own CPU time (user + system) per request: steadier than req/s on a shared machine."""


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _latency(out: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not found:
        raise SystemExit(f"wrk printed no {percentile}% latency:\n{out}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(port: int, token: str, *, connections: int, seconds: int) -> Measured:
    url = f"http://127.0.0.1:{port}/"
    out = subprocess.run(
        _pinned(
            LOAD_CPU,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-H",
                f"Authorization: Bearer {token}",
                url,
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += (
        sum(int(n) for n in re.findall(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)[0])
        if "Socket errors" in out
        else 0
    )
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Measured(rps, _latency(out, "50"), _latency(out, "99"), errors, requests)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(*, binary: Path | None, seconds: int, rounds: int) -> dict[tuple[str, int], list[tuple[Measured, float]]]:
    token = bench_token()
    kinds = [k for k in KINDS if k != "kube-rbac-proxy" or binary is not None]
    results: dict[tuple[str, int], list[tuple[Measured, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as folder:
        api_port, upstream_port = free_port(), free_port()
        write_certs(CertRequest(out_dir=Path(folder), dns_names=("localhost",), ips=("127.0.0.1",)))
        api = _spawn([sys.executable, "-m", "bench.proxy", "--serve-api", str(api_port), folder], cpu=LOAD_CPU)
        upstream = _spawn([sys.executable, "-m", "bench.proxy", "--serve-upstream", str(upstream_port)], cpu=LOAD_CPU)
        try:
            _wait(f"http://127.0.0.1:{upstream_port}/", token, upstream, "the upstream")
            config = kubeconfig(Path(folder), api_port)
            for round_ in range(rounds):
                for kind in kinds:
                    if kind == "upstream":
                        process, port = None, upstream_port
                    else:
                        process, port = start_proxy(
                            kind, upstream=upstream_port, config=config, binary=binary, token=token
                        )
                    try:
                        wrk(port, token, connections=16, seconds=1)  # warm: pools filled, verdict cached
                        for connections in (1, 16):
                            metered = process or upstream  # the upstream alone: an aiohttp server's own cost
                            cpu_before = cpu_seconds(metered.pid)
                            measured = wrk(port, token, connections=connections, seconds=seconds)
                            spent = cpu_seconds(metered.pid) - cpu_before
                            measured = dataclasses.replace(measured, cpu_us=spent / measured.requests * 1e6)
                            memory = rss_mib(process.pid) if process else float("nan")
                            results.setdefault((kind, connections), []).append((measured, memory))
                            print(
                                f"  round {round_ + 1} {kind:16} c={connections:<3} {measured.rps:9.0f} req/s  "
                                f"p50 {measured.p50_us:7.0f} us  p99 {measured.p99_us:7.0f} us  RSS {memory:6.1f} MiB  "
                                f"CPU {measured.cpu_us:5.0f} us/request"
                                + (f"  ERRORS {measured.errors}" if measured.errors else ""),
                                flush=True,
                            )
                    finally:
                        if process is not None:
                            process.terminate()
                            process.wait()
        finally:
            for each in (api, upstream):
                each.terminate()
                each.wait()
    return results


def report(results: dict[tuple[str, int], list[tuple[Measured, float]]], *, rounds: int) -> None:
    print(
        "\n| proxy | connections | req/s | p50 | p99 | p50 added | p99 added | RSS | CPU per request "
        "| req/s ratio (tp/krp) | CPU ratio (krp/tp) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for connections in (1, 16):
        base = results[("upstream", connections)]
        base_p50 = statistics.median(m.p50_us for m, _ in base)
        base_p99 = statistics.median(m.p99_us for m, _ in base)
        for kind in KINDS:
            rows = results.get((kind, connections))
            if not rows:
                continue
            rps = statistics.median(m.rps for m, _ in rows)
            p50 = statistics.median(m.p50_us for m, _ in rows)
            p99 = statistics.median(m.p99_us for m, _ in rows)
            memory = statistics.median(r for _, r in rows)
            ratio = cpu_ratio = ""
            if kind == "token-projector" and ("kube-rbac-proxy", connections) in results:
                peer = results[("kube-rbac-proxy", connections)]
                ratios = [a.rps / b.rps for (a, _), (b, _) in zip(rows, peer, strict=True)]
                ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                cpu_ratios = [b.cpu_us / a.cpu_us for (a, _), (b, _) in zip(rows, peer, strict=True)]
                cpu_ratio = f"{statistics.median(cpu_ratios):.2f}x ({min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})"
            cpu = f"{statistics.median(m.cpu_us for m, _ in rows):.0f} us"
            added = "" if kind == "upstream" else f"{p50 - base_p50:.0f} us | {p99 - base_p99:.0f} us"
            added = added or " | "
            shown_memory = "" if kind == "upstream" else f"{memory:.1f} MiB"
            cells = [kind, str(connections), f"{rps:.0f}", f"{p50:.0f} us", f"{p99:.0f} us", added, shown_memory, cpu]
            cells += [ratio, cpu_ratio]
            print("| " + " | ".join(cells) + " |")
    print(
        f"\nmedians of {rounds} rounds (lowest-highest); ratios per round: token-projector's req/s over "
        "kube-rbac-proxy's, and kube-rbac-proxy's CPU time per request over token-projector's (what the req/s "
        "ratio would be with each proxy's CPU saturated)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kube-rbac-proxy",
        type=Path,
        default=os.environ.get("KUBE_RBAC_PROXY"),
        help="kube-rbac-proxy v0.21.0 binary (built from its repository as docs/proxy.md says; env KUBE_RBAC_PROXY); "
        "without it the peer's rows are skipped",
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, fresh processes each (default 3)")
    parser.add_argument("--serve-api", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_api:
        serve_api(int(args.serve_api[0]), Path(args.serve_api[1]))
        return
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench-deps does it on Debian)")
    binary = args.kube_rbac_proxy
    if binary is None:
        print("# kube-rbac-proxy: no binary given (--kube-rbac-proxy PATH or KUBE_RBAC_PROXY): its rows are skipped")
    elif not os.access(binary, os.X_OK):
        print(f"# kube-rbac-proxy: {binary} is not an executable file: its rows are skipped")
        binary = None
    print(
        f"# wrk -t1 --latency, one token, proxies on CPU {PROXY_CPU} (kube-rbac-proxy GOMAXPROCS=1), upstream, "
        f"API stand-in and wrk on CPU {LOAD_CPU}; {args.rounds} rounds x {args.seconds}s per cell; "
        f"python {sys.version.split()[0]}"
    )
    report(run(binary=binary, seconds=args.seconds, rounds=args.rounds), rounds=args.rounds)


if __name__ == "__main__":
    main()
