"""Faults under load: certificate rotation, SIGTERM, and a sustained run, each reported as figures.

A steady open-loop load (a fixed rate of requests, half on new TLS connections so that handshakes
happen throughout) runs against ``token-projector serve`` while a fault is applied:

1. rotation: the certificate is replaced on disk, then, a second later, its key (the moment when only
   one of the two is new is the dangerous one); new handshakes must then get the new certificate;
2. SIGTERM: readiness must fail at once; the load generator stops sending new requests one second
   after it sees that (as Service endpoints would), every request already sent must succeed, and the
   process must exit within its grace period;
3. sustained: wrk at 4 connections (a high fraction of peak) in 10-second slices for ``--minutes``:
   errors, latency percentiles per slice, resident memory at start and end.

Every request is checked (HTTP 200 and a patch in the answer). Usage:
python bench/reliability.py [--rate 300] [--minutes 2]
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography import x509

from bench.load import Result, rss_kib, serve_command, wrk
from bench.payloads import SMALL, body
from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE

REPO = Path(__file__).parents[1]
PORT, PROBE_PORT = 18543, 18580
DRAIN_SECONDS, SHUTDOWN_TIMEOUT, GRACE_SECONDS = 3.0, 10.0, 30.0
"""As in manifests/: the grace period outlasts drain plus shutdown timeout."""


@dataclass
class Sample:
    sent_at: float
    latency: float
    ok: bool
    error: str = ""


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    stop_sending: asyncio.Event = field(default_factory=asyncio.Event)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.sent_at < end]


def p99_ms(samples: list[Sample]) -> str:
    latencies = sorted(s.latency for s in samples if s.ok)
    if len(latencies) < 2:
        return "-"
    return f"{statistics.quantiles(latencies, n=100)[98] * 1000:.2f}"


async def steady_load(load: Load, context: ssl.SSLContext, *, rate: float, seconds: float) -> None:
    data = body(SMALL)
    keep_alive = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=64))
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True, limit=64))
    tasks: list[asyncio.Task[None]] = []

    async def one(session: aiohttp.ClientSession) -> None:
        sent = time.monotonic()
        try:
            async with session.post(
                f"https://localhost:{PORT}/mutate",
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                ok = response.status == 200 and "patch" in (await response.json())["response"]
                load.samples.append(Sample(sent, time.monotonic() - sent, ok, "" if ok else f"HTTP {response.status}"))
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            load.samples.append(Sample(sent, time.monotonic() - sent, False, repr(error)))

    start = time.monotonic()
    count = 0
    while (now := time.monotonic()) - start < seconds and not load.stop_sending.is_set():
        tasks.append(asyncio.create_task(one(fresh if count % 2 else keep_alive)))
        count += 1
        await asyncio.sleep(max(0.0, start + count / rate - now))
    await asyncio.gather(*tasks)
    await keep_alive.close()
    await fresh.close()


def start_server(certs: Path, log: Path) -> subprocess.Popen[bytes]:
    command = serve_command(certs, port=PORT, probe_port=PROBE_PORT, extra=(
        "--cert-reload-seconds", "0.2", "--drain-seconds", str(DRAIN_SECONDS),
        "--shutdown-timeout-seconds", str(SHUTDOWN_TIMEOUT),
    ))  # fmt: skip
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=REPO)
    deadline = time.monotonic() + 30
    while ready() != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"token-projector did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def ready() -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PROBE_PORT}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


async def presented_serial(context: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection("127.0.0.1", PORT, ssl=context, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


def replace(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".new")
    shutil.copy(source, tmp)
    os.replace(tmp, target)


async def rotation(certs: Path, work: Path, *, context: ssl.SSLContext, rate: float) -> dict[str, str]:
    following = work / "next"
    following.mkdir()
    for name in (CA_FILE, CA_KEY_FILE):
        shutil.copy(certs / name, following / name)
    write_certs(CertRequest(out_dir=following, dns_names=("localhost",), ips=("127.0.0.1",)))
    old = await presented_serial(context)
    load = Load()
    loader = asyncio.create_task(steady_load(load, context, rate=rate, seconds=6))
    t0 = time.monotonic()
    await asyncio.sleep(2)
    replace(following / CERT_FILE, certs / CERT_FILE)  # new certificate, old key
    await asyncio.sleep(1)
    half_rotated_serial = await presented_serial(context)
    replace(following / KEY_FILE, certs / KEY_FILE)
    t_done = time.monotonic()
    await loader
    new = await presented_serial(context)
    expected = x509.load_pem_x509_certificate((following / CERT_FILE).read_bytes()).serial_number
    failed = [s for s in load.samples if not s.ok]
    return {
        "requests sent": str(len(load.samples)),
        "failed": str(len(failed)) + (f" ({failed[0].error})" if failed else ""),
        "p99 ms before / during / after": f"{p99_ms(load.window(t0, t0 + 2))} / "
        f"{p99_ms(load.window(t0 + 2, t_done + 0.5))} / {p99_ms(load.window(t_done + 0.5, t0 + 6))}",
        "certificate while only the cert file was new": "old (kept)" if half_rotated_serial == old else "CHANGED",
        "new handshakes after rotation": "new certificate" if new == expected else "OLD certificate",
    }


async def sigterm(process: subprocess.Popen[bytes], context: ssl.SSLContext, *, rate: float) -> dict[str, str]:
    load = Load()
    loader = asyncio.create_task(steady_load(load, context, rate=rate, seconds=30))
    t0 = time.monotonic()
    await asyncio.sleep(2)
    rss_before = rss_kib(process)
    sent_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    while ready() == 200:  # noqa: ASYNC110 -- polls another process's probe; no Event can stand for it
        await asyncio.sleep(0.005)
    not_ready_after = time.monotonic() - sent_at
    await asyncio.sleep(1.0)  # endpoints propagation: the load generator stops sending
    load.stop_sending.set()
    await loader
    while process.poll() is None and time.monotonic() - sent_at < GRACE_SECONDS:  # noqa: ASYNC110 -- as above
        await asyncio.sleep(0.05)
    exited_after = time.monotonic() - sent_at
    failed = [s for s in load.samples if not s.ok]
    return {
        "requests sent": str(len(load.samples)),
        "failed": str(len(failed)) + (f" ({failed[0].error})" if failed else ""),
        "p99 ms before / during drain": f"{p99_ms(load.window(t0, sent_at))} / {p99_ms(load.window(sent_at, 1e12))}",
        "readiness false after SIGTERM": f"{not_ready_after * 1000:.0f} ms",
        "exit": f"status {process.returncode} after {exited_after:.1f} s (grace period {GRACE_SECONDS:.0f} s, "
        f"drain {DRAIN_SECONDS:.0f} s)",
        "resident memory at SIGTERM": f"{rss_before / 1024:.1f} MiB",
    }


def sustained(process: subprocess.Popen[bytes], work: Path, *, minutes: float) -> dict[str, str]:
    slices = []
    rss = [rss_kib(process)]
    for _ in range(max(1, round(minutes * 6))):
        slices.append(wrk(PORT, body(SMALL), connections=4, seconds=10, workdir=work))
        rss.append(rss_kib(process))
    third = max(1, len(slices) // 3)

    def p99(part: list[Result]) -> str:
        return f"{statistics.median(r.p99_ms for r in part):.2f}"

    middle = slices[third:-third] or slices
    return {
        "duration": f"{len(slices) * 10} s, wrk 4 connections (closed loop)",
        "requests": f"{sum(s.requests_per_second * 10 for s in slices):,.0f} "
        f"({statistics.median(s.requests_per_second for s in slices):,.0f} req/s median slice)",
        "errors": str(sum(s.errors for s in slices)),
        "p99 ms first / middle / last third": f"{p99(slices[:third])} / {p99(middle)} / {p99(slices[-third:])}",
        "resident memory at start / after the first 10 s / at the end": f"{rss[0] / 1024:.1f} / "
        f"{rss[1] / 1024:.1f} / {rss[-1] / 1024:.1f} MiB (peak {max(rss) / 1024:.1f} MiB)",
    }


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="token-projector-reliability-"))
    certs = work / "certs"
    write_certs(CertRequest(out_dir=certs, dns_names=("localhost",), ips=("127.0.0.1",)))
    context = ssl.create_default_context(cafile=str(certs / CA_FILE))
    reports: dict[str, dict[str, str]] = {}
    try:
        process = start_server(certs, work / "server-1.log")
        reports["certificate rotation under load"] = await rotation(certs, work, context=context, rate=args.rate)
        reports["sustained load"] = sustained(process, work, minutes=args.minutes)
        reports["SIGTERM under load"] = await sigterm(process, context, rate=args.rate)
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"# token-projector reliability, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
        f"steady load {args.rate:.0f} req/s (half on new TLS connections), small Pod"
    )
    for title, report in reports.items():
        print(f"\n| {title} | |\n| --- | --- |")
        for key, value in report.items():
            print(f"| {key} | {value} |")
    print()
    print(json.dumps(reports), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="steady load, requests per second (default 300)")
    parser.add_argument("--minutes", type=float, default=2, help="length of the sustained run (default 2)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make reliability does it on Debian)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
