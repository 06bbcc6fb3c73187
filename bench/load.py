"""Load benchmark: token-projector against the bare aiohttp TLS ceiling, in one invocation, with wrk.

Each server runs pinned to CPU 0, wrk to CPU 1, over HTTPS keep-alive. Rounds alternate the servers
so that drift on a shared machine hits them alike; the table shows medians over the rounds, and each
ratio is the median over the rounds of the ratio to the ceiling's run just before (drift between
rounds cancels out of a ratio of neighbours, not out of a ratio of medians). A third server,
token-projector with a fake review (bench/shell_only.py), shows how the cost above the ceiling splits
between the server shell and the review. Before any load, token-projector's answer to each payload is
checked to be a correct patch, so a fast wrong answer is never measured.
Usage: python bench/load.py [--seconds 5] [--rounds 5]
"""

import argparse
import base64
import copy
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jsonpatch

from bench.payloads import LARGE, SMALL, body
from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CERT_FILE, KEY_FILE

REPO = Path(__file__).parents[1]
SERVER_CPU, LOAD_CPU = "0", "1"
SHELL_ONLY = "shell only (fake review)"
"""token-projector with a fake review (bench/shell_only.py): shows how the cost splits between shell and review."""


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


def _pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else command


def serve_command(certs: Path, *, port: int, probe_port: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """``token-projector serve`` on loopback with the certificates in ``certs``, as the benchmarks run it."""
    return [
        sys.executable, "-m", "webhook", "serve", "--address", "127.0.0.1", "--port", str(port),
        "--probe-port", str(probe_port), "--cert-file", str(certs / CERT_FILE), "--key-file", str(certs / KEY_FILE),
        *extra,
    ]  # fmt: skip


def start_server(kind: str, port: int, *, certs: Path, log: Path) -> subprocess.Popen[bytes]:
    if kind == "ceiling":
        command = [sys.executable, str(REPO / "bench" / "ceiling.py"), str(port), str(certs / CERT_FILE),
                   str(certs / KEY_FILE)]  # fmt: skip
    else:
        command = serve_command(certs, port=port, extra=("--drain-seconds", "0"))
        if kind == SHELL_ONLY:
            command = [sys.executable, str(REPO / "bench" / "shell_only.py"), *command[command.index("serve") + 1 :]]
    process = subprocess.Popen(
        _pinned(SERVER_CPU, command),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            post(port, body(SMALL), certs=certs)
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def post(port: int, data: bytes, *, certs: Path) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    request = urllib.request.Request(
        f"https://localhost:{port}/mutate", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def check_answer(port: int, review: dict[str, object], *, certs: Path) -> None:
    """token-projector must answer with the right patch before its speed means anything."""
    answer = post(port, body(review), certs=certs)
    response = answer["response"]
    assert isinstance(response, dict)
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(copy.deepcopy(review["request"]["object"]), ops)  # type: ignore[index]
    assert any(v["name"] == "audience-token" for v in pod["spec"]["volumes"])
    for container in pod["spec"]["containers"]:
        assert container["env"][0]["name"] == "SERVICE_ACCOUNT_TOKEN_PATH"
        assert any(m["name"] == "audience-token" for m in container["volumeMounts"])


def wrk(port: int, data: bytes, *, connections: int, seconds: int, workdir: Path) -> Result:
    payload = workdir / "payload.json"
    payload.write_bytes(data)
    script = workdir / "post.lua"
    script.write_text(
        f'local f = io.open("{payload}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "function response(status, headers, body)\n"
        '  if status ~= 200 then wrk.thread:set("bad", (wrk.thread:get("bad") or 0) + 1) end\nend\n'
    )
    out = subprocess.run(
        _pinned(
            LOAD_CPU,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"https://127.0.0.1:{port}/mutate",
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

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return Result(rps, percentile("50"), percentile("90"), percentile("99"), errors)


def rss_kib(process: subprocess.Popen[bytes]) -> int:
    """Resident size of the server (the python child of taskset, which execs it: same pid)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per cell; the table shows medians (default 5)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it on Debian)")

    work = Path(tempfile.mkdtemp(prefix="token-projector-bench-"))
    certs = work / "certs"
    write_certs(CertRequest(out_dir=certs, dns_names=("localhost",), ips=("127.0.0.1",)))
    payloads = {"small": body(SMALL), "large": body(LARGE)}
    ports = {"ceiling": 18443, "token-projector": 18444, SHELL_ONLY: 18445}
    servers = {kind: start_server(kind, port, certs=certs, log=work / f"{kind}.log") for kind, port in ports.items()}
    try:
        for kind in ("token-projector", SHELL_ONLY):
            check_answer(ports[kind], SMALL, certs=certs)
            check_answer(ports[kind], LARGE, certs=certs)
        memory = {kind: [rss_kib(p)] for kind, p in servers.items()}
        cells: dict[tuple[str, str, int], list[Result]] = {}
        for _ in range(args.rounds):
            for size, data in payloads.items():
                for connections in (1, 16):
                    for kind in ports:
                        result = wrk(ports[kind], data, connections=connections, seconds=args.seconds, workdir=work)
                        cells.setdefault((kind, size, connections), []).append(result)
                        memory[kind].append(rss_kib(servers[kind]))
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"# token-projector load benchmark, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}, {args.rounds} x {args.seconds}s per cell, medians, "
        "ratios: median of each round's ratio to the ceiling"
    )
    print(
        f"# payloads: small {len(payloads['small']) / 1024:.1f} KiB (2 containers), "
        f"large {len(payloads['large']) / 1024:.1f} KiB (12 containers)"
    )
    print()
    print("| server | pod | conns | req/s | p50 ms | p90 ms | p99 ms | errors | req/s vs ceiling | p99 vs ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in payloads:
        for connections in (1, 16):
            ceiling = cells[("ceiling", size, connections)]
            for kind in ports:
                runs = cells[(kind, size, connections)]
                rps = statistics.median(r.requests_per_second for r in runs)
                p99 = statistics.median(r.p99_ms for r in runs)
                pairs = list(zip(runs, ceiling, strict=True))
                ratio = statistics.median(r.requests_per_second / c.requests_per_second for r, c in pairs)
                p99_ratio = statistics.median(r.p99_ms / c.p99_ms for r, c in pairs)
                print(
                    f"| {kind} | {size} | {connections} | {rps:,.0f} | "
                    f"{statistics.median(r.p50_ms for r in runs):.2f} | "
                    f"{statistics.median(r.p90_ms for r in runs):.2f} | "
                    f"{p99:.2f} | {sum(r.errors for r in runs)} | {ratio:.2f}x | {p99_ratio:.2f}x |"
                )
    print()
    for kind, samples in memory.items():
        print(
            f"# {kind} resident memory: {samples[0] / 1024:.1f} MiB before load, "
            f"{max(samples) / 1024:.1f} MiB peak, {samples[-1] / 1024:.1f} MiB after "
            f"{args.rounds * 4 * args.seconds}s of load"
        )


if __name__ == "__main__":
    main()
