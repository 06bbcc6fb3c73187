"""Instructions per request: the ceiling, the shell and token-projector under callgrind, per Pod size.

The figure that holds still (issue 20). Each server runs under callgrind (bench/instructions_callgrind.py)
with its wall clock stopped (bench/instructions_server.py), and is sent the same AdmissionReview
again and again over one keep-alive HTTPS connection by a client that waits for the server to be
idle at every step (bench/instructions_client.py): ``--warmup`` requests uncounted (the first ten
or so cost up to a quarter more: CPython specialises its bytecode, caches fill, the shell makes its
one real review per body), then counters zeroed and two windows of ``--requests`` requests, each
closed by a dump. Instructions per request are the second window's count over its requests (a
window costs some 600 instructions besides its requests: waking from ``epoll_wait`` to be counted);
the first window, which should be the same, shows that the warm-up was long enough.
Only the server runs under valgrind; the client's work is in no count.

Every answer is checked: before counting, token-projector's and the shell's answer to each Pod must
apply as the right patch (bench.load.check_answer), and every counted answer must be byte for byte
that checked answer. ``--runs`` fresh processes per server (default 2) show how far a count
repeats. The stage-by-stage breakdown follows (bench/stages.py); with ``--mypyc``, the same counts
for the core compiled with mypyc (bench/instructions_mypyc.py builds it) and bench/micro.py's
timings for both builds, one after the other.
Usage: python -m bench.instructions [--runs 2] [--mypyc] [--no-stages] [--keep]
"""

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench import stages
from bench.instructions_callgrind import Metered, inclusive_costs, missing_tools
from bench.instructions_client import Client
from bench.instructions_mypyc import build, compare_micro
from bench.load import check_answer
from bench.payloads import body, pod_review
from webhook.install.certs import CertRequest, write_certs
from webhook.install.deployment import CERT_FILE, KEY_FILE

REPO = Path(__file__).parents[1]
SIZES = (1, 2, 12, 50)
"""Containers per Pod: a bare Pod, bench/load.py's small and large Pods, and a very large one."""
CEILING, SHELL, PROJECTOR, COMPILED = "ceiling", "shell (fake review)", "token-projector", "token-projector (mypyc)"


@dataclass(frozen=True)
class Window:
    """Two dumps of one server for one Pod, each of ``requests`` requests; the second is the count."""

    first_total: int
    second_total: int
    requests: int

    @property
    def per_request(self) -> float:
        return self.second_total / self.requests

    @property
    def drift(self) -> float:
        """How far the first window's count is from the second's, as a fraction: 0 once warm."""
        return (self.first_total - self.second_total) / self.second_total


@dataclass(frozen=True, kw_only=True)
class Plan:
    warmup: int
    requests: int


@dataclass
class Measured:
    """One server process's windows per Pod size, and its profile per request (inclusive, by function)."""

    windows: dict[int, Window] = field(default_factory=dict)
    profiles: dict[int, dict[str, float]] = field(default_factory=dict)


def server_command(kind: str, port: int, *, certs: Path, python: str, collector: bool = True) -> list[str]:
    """The server as bench/load.py runs it, started through bench/instructions_server.py (the wall clock stopped)."""
    frozen = [python, str(REPO / "bench" / "instructions_server.py"), *(() if collector else ("--no-collector",))]
    if kind == CEILING:
        return [*frozen, str(REPO / "bench" / "ceiling.py"), str(port), str(certs / CERT_FILE), str(certs / KEY_FILE)]
    serve = [
        "--address", "127.0.0.1", "--port", str(port), "--probe-port", "0", "--drain-seconds", "0",
        "--cert-file", str(certs / CERT_FILE), "--key-file", str(certs / KEY_FILE),
        "--cert-reload-seconds", "86400",  # a file check every 2 s would be counted in whichever window it falls
    ]  # fmt: skip
    if kind == SHELL:
        return [*frozen, str(REPO / "bench" / "shell_only.py"), *serve]
    return [*frozen, "webhook", "serve", *serve]


def wait_until_listening(port: int, meter: Metered, *, log: Path) -> None:
    """Wait for the port to listen (in /proc/net/tcp, state 0A), without a connection that would cost work."""
    listening = f"0100007F:{port:04X} 00000000:0000 0A"
    deadline = time.monotonic() + 300
    while listening not in Path("/proc/net/tcp").read_text():
        if meter.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server on port {port} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Job:
    """One server process to count: which server, which run, and whether with the cyclic collector."""

    kind: str
    run: int
    collector: bool = True


def measure_server(job: Job, *, port: int, python: str, plan: Plan, certs: Path, work: Path) -> Measured:
    """Count one fresh server process over every Pod size; in the first run, take its profile too."""
    kind = job.kind
    log = work / f"{kind.split()[0]}-{port}.log"
    compiled = kind == COMPILED
    meter = Metered.start(
        server_command(kind, port, certs=certs, python=python, collector=job.collector),
        out_file=work / f"{kind.split()[0]}-{port}.callgrind",
        log=log,
        # The compiled core is installed, not in the tree: run it away from the sources, or they shadow it.
        cwd=work if compiled else REPO,
        env={"PYTHONPATH": ""} if compiled else {"PYTHONPATH": str(REPO)},
    )
    measured = Measured()
    try:
        wait_until_listening(port, meter, log=log)
        reviews = {size: pod_review(size) for size in SIZES}
        if kind != CEILING:
            for review in reviews.values():
                check_answer(port, review, certs=certs)
        meter.instrument()
        client = Client(port, certs=certs, server_pid=meter.process.pid, log=None if kind == CEILING else log)
        for size, review in reviews.items():
            data = body(review)
            expected = client.post(data)

            def run(count: int, data: bytes = data, expected: bytes = expected, size: int = size) -> None:
                for _ in range(count):
                    if client.post(data) != expected:
                        raise SystemExit(f"{kind} changed its answer to the same {size}-container Pod")

            run(plan.warmup)
            meter.zero()
            run(plan.requests)
            first = meter.dump()
            run(plan.requests)
            measured.windows[size] = Window(first, meter.dump(), plan.requests)
            if job.run == 0:
                costs = inclusive_costs(meter.dumps[-1])
                measured.profiles[size] = {name: cost / plan.requests for name, cost in costs.items()}
        client.close()
    finally:
        meter.stop()
    return measured


def print_table(runs: list[dict[str, Measured]], kinds: list[str]) -> None:
    header = [f"{k} instr/request" for k in kinds] + [f"{k} / ceiling" for k in kinds[1:]]
    print("| Pod (containers) | body KiB | " + " | ".join(header) + " |")
    print("|" + " --- |" * (2 + len(header)))
    for size in SIZES:
        per = {kind: statistics.median(run[kind].windows[size].per_request for run in runs) for kind in kinds}
        cells = [f"{per[k]:,.0f}" for k in kinds] + [f"{per[k] / per[CEILING]:.3f}x" for k in kinds[1:]]
        print(f"| {size} | {len(body(pod_review(size))) / 1024:.1f} | " + " | ".join(cells) + " |")


def print_repeats(runs: list[dict[str, Measured]], kinds: list[str], plan: Plan) -> None:
    print(
        f"Repeatability: the two windows' totals ({plan.requests} requests each) of each run, each run a fresh "
        "server process; spread: largest less smallest instr/request over the runs; drift: the first window "
        "against the second, largest over the runs (0 once the warm-up is long enough)."
    )
    print()
    head = " | ".join(f"run {i + 1}: window 1 / window 2" for i in range(len(runs)))
    print(f"| server | Pod | {head} | spread | spread % | drift % |")
    print("|" + " --- |" * (5 + len(runs)))
    for kind in kinds:
        for size in SIZES:
            windows = [run[kind].windows[size] for run in runs]
            per = [w.per_request for w in windows]
            cells = " | ".join(f"{w.first_total:,} / {w.second_total:,}" for w in windows)
            spread, drift = max(per) - min(per), max(abs(w.drift) for w in windows)
            print(
                f"| {kind} | {size} | {cells} | {spread:,.0f} | {100 * spread / statistics.median(per):.2f}% "
                f"| {100 * drift:.2f}% |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="fresh processes per server (default 2)")
    parser.add_argument("--warmup", type=int, default=12, help="uncounted requests per Pod size (default 12)")
    parser.add_argument("--requests", type=int, default=8, help="requests in each counted window (default 8)")
    parser.add_argument("--mypyc", action="store_true", help="also count the core compiled with mypyc")
    parser.add_argument("--no-stages", action="store_true", help="leave out the stage-by-stage breakdown")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dumps and server logs (some 50 MB)")
    args = parser.parse_args()
    if missing := missing_tools():
        raise SystemExit(f"{', '.join(missing)} not found: apt-get install valgrind (make bench-deps does it)")
    started = time.monotonic()
    plan = Plan(warmup=args.warmup, requests=args.requests)
    pythons = {CEILING: sys.executable, SHELL: sys.executable, PROJECTOR: sys.executable}
    if args.mypyc:
        pythons[COMPILED] = str(build(REPO))
    kinds = list(pythons)
    work = Path(tempfile.mkdtemp(prefix="token-projector-instructions-"))
    certs = work / "certs"
    write_certs(CertRequest(out_dir=certs, dns_names=("localhost",), ips=("127.0.0.1",)))
    jobs = [Job(kind, run) for run in range(args.runs) for kind in kinds]
    if not args.no_stages:
        jobs += [Job(kind, 0, collector=False) for kind in kinds if kind != SHELL]
    # Two at a time, each on its own port: the client waits for its server at every step, and what
    # else runs changes no count. On two cores it halves the time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            job: pool.submit(
                measure_server, job, port=19443 + i, python=pythons[job.kind], plan=plan, certs=certs, work=work
            )
            for i, job in enumerate(jobs)
        }
        counted = None if args.no_stages else stages.count_in_process(
            {size: body(pod_review(size)) for size in SIZES}, python=sys.executable, repo=REPO, work=work
        )  # fmt: skip
        done = {job: future.result() for job, future in futures.items()}
    runs = [{kind: done[Job(kind, run)] for kind in kinds} for run in range(args.runs)]
    micro = compare_micro(REPO, compiled=pythons[COMPILED]) if args.mypyc else ""

    print(
        f"# token-projector instructions per request (callgrind, {valgrind_version()}), {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, Python {platform.python_version()}; median of {args.runs} runs, each "
        f"the second of two windows of {plan.requests} requests after {plan.warmup} uncounted"
    )
    print()
    print_table(runs, kinds)
    print()
    print_repeats(runs, kinds, plan)
    if counted is not None:
        print()
        breakdown = {
            size: {
                kind: stages.Server(
                    total=statistics.median(run[kind].windows[size].per_request for run in runs),
                    collector=runs[0][kind].profiles[size].get("gc_collect_main", 0),
                    profile=done[Job(kind, 0, collector=False)].profiles[size],
                )
                for kind in kinds
                if kind != SHELL
            }
            for size in SIZES
        }
        stages.print_breakdown(SIZES, servers=breakdown, counted=counted)
    if micro:
        print()
        print(micro)
    print()
    if args.keep:
        print(f"# {time.monotonic() - started:.0f} s in all; callgrind dumps and server logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"# {time.monotonic() - started:.0f} s in all")


def valgrind_version() -> str:
    return subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
