"""Where token-projector's instructions per request go, stage by stage, next to the ceiling's.

Two sources, both counted with callgrind (bench/instructions_callgrind.py):

* the servers' own profiles, taken by bench/instructions.py while they answer: the inclusive
  instructions of C functions that are one stage each (orjson's ``loads`` and ``dumps``, the TLS
  record functions of ``_ssl``, CPython's garbage collector), and, for a mypyc-compiled core, of
  each compiled Python function (``CPyDef_pod___check_shape`` is ``webhook.core.pod.check_shape``);
* for the stages written in Python, which a profile of the interpreter cannot tell apart, the
  review run in a separate process (bench/stages_child.py), each stage counted by taking it out:
  ``review_body`` with the stage, less ``review_body`` with the stage's results replayed.

What no stage claims (asyncio, aiohttp's request and response objects, our handler's own lines)
is the server's total less the stages: the row "aiohttp, asyncio and the handler".
"""

from dataclasses import dataclass
from pathlib import Path

from bench.instructions_callgrind import Metered, reading_stdin, wait_until_blocked

REVIEW_STAGES: dict[str, tuple[str, ...]] = {
    "decode (orjson.loads, in review_body)": ("document:decode",),
    "envelope and request checks": ("review:_envelope",),
    "shape check": ("pod:check_shape",),
    "annotations": ("annotations:read_token_spec", "annotations:unknown_annotations"),
    "legacy check": ("legacy:apply_policy",),
    "mutation (the patch's ops)": ("mutation:plan_injection",),
    "body search (absent_names)": ("document:absent_names",),
}
"""Each stage of the review, as the functions of ``webhook.core`` (``module:function``) that do it."""
SERVER_STAGES = {"log line (built and written)": "log-line", "metrics": "metrics"}
"""Per-request work of the server past the review, counted in-process as webhook.server does it."""
TLS = ("_ssl_MemoryBIO_write", "_ssl__SSLSocket_read", "_ssl__SSLSocket_write")


@dataclass(frozen=True)
class Counted:
    """Instructions of each variant (bench/stages_child.py) per call, per Pod size; or why not counted."""

    per_call: dict[int, dict[str, float]]
    not_counted: dict[str, str]

    def stage(self, size: int, targets: tuple[str, ...]) -> float | None:
        """A review stage's instructions: ``review_body`` less ``review_body`` without it, plus the replay."""
        calls = self.per_call[size]
        if any(f"without:{t}" not in calls for t in targets):
            return None
        return sum(
            calls["review_body"] - calls[f"without:{t}"] + calls[f"replay-call:{t}"] - calls["nothing"] for t in targets
        )

    def server(self, size: int, name: str) -> float:
        return self.per_call[size][name] - self.per_call[size]["nothing"]


def count_in_process(
    bodies: dict[int, bytes], *, python: str, repo: Path, work: Path, warmup: int = 8, calls: tuple[int, int] = (2, 6)
) -> Counted:
    """Run bench/stages_child.py under callgrind and count each variant ``calls[1] - calls[0]`` times.

    Each variant is first run ``warmup`` times uncounted (CPython specialises its bytecode over the
    first executions); then two counted runs, of ``calls[0]`` and ``calls[1]`` calls, whose
    difference cancels what a ``run`` command costs besides its calls.
    """
    targets = sorted({t for stage in REVIEW_STAGES.values() for t in stage})
    log = work / "stages.log"
    meter = Metered.start(
        [python, str(repo / "bench" / "stages_child.py")],
        out_file=work / "stages.callgrind",
        log=log,
        pass_stdio=True,
        cwd=repo,
        env={"PYTHONPATH": str(repo)},
    )
    stdin, stdout = meter.process.stdin, meter.process.stdout
    assert stdin is not None
    assert stdout is not None

    def ask(command: str) -> str:
        stdin.write(command.encode() + b"\n")
        stdin.flush()
        answer = stdout.readline().decode().strip()
        if not answer:
            raise SystemExit(f"bench/stages_child.py stopped: {log.read_text()[-3000:]}")
        wait_until_blocked(meter.process.pid, reading_stdin)
        return answer

    per_call: dict[int, dict[str, float]] = {}
    not_counted: dict[str, str] = {}
    try:
        variants: dict[int, list[str]] = {}
        for size, raw in bodies.items():
            (work / f"body-{size}.json").write_bytes(raw)
            answer = ask(f"load {size} {work / f'body-{size}.json'} {' '.join(targets)}")
            found = dict(part.split("=", 1) for part in answer.split())
            not_counted.update({t: why for t, why in found.items() if why != "ok"})
            ok = [t for t, why in found.items() if why == "ok"]
            fixed = ["nothing", "review_body", "decode-free", *SERVER_STAGES.values()]
            variants[size] = [*fixed, *(f"without:{t}" for t in ok), *(f"replay-call:{t}" for t in ok)]
        meter.instrument()
        for size, names in variants.items():
            for name in names:
                ask(f"run {size} {name} {warmup}")
            meter.dump()
            per_call[size] = {}
            for name in names:
                ask(f"run {size} {name} {calls[0]}")
                first = meter.dump()
                ask(f"run {size} {name} {calls[1]}")
                per_call[size][name] = (meter.dump() - first) / (calls[1] - calls[0])
        stdin.write(b"stop\n")
        stdin.flush()
        meter.process.wait(timeout=120)
    finally:
        meter.stop()
    return Counted(per_call=per_call, not_counted=not_counted)


def compiled_name(target: str) -> str:
    """The C function mypyc makes of ``module:function`` in webhook.core."""
    module, _, function = target.partition(":")
    return f"CPyDef_{module}___{function}"


@dataclass(frozen=True, kw_only=True)
class Server:
    """One server's figures for one Pod size: its total, its collector's share, its profile without a collector.

    A collection runs inside whichever allocation crosses the threshold, so a profile with the
    collector on would put its cost in some stage: the stages are read from a second process of
    the same server with the collector off, and the collector's own cost from the first one.
    """

    total: float
    collector: float
    profile: dict[str, float]

    def cost(self, *functions: str) -> float:
        return sum(self.profile.get(f, 0) for f in functions)


Row = tuple[str, dict[str, float | None]]


def rows(size: int, *, servers: dict[str, Server], counted: Counted, compiled: str | None) -> list[Row]:
    """The breakdown of one Pod size: (stage, instructions per request in each server that has the stage)."""
    kinds = list(servers)
    decoded_and_freed = counted.server(size, "decode-free")
    free = {k: decoded_and_freed - s.cost("loads") for k, s in servers.items()}
    table: list[Row] = [
        ("TLS (records in, decrypt, encrypt)", {k: s.cost(*TLS) for k, s in servers.items()}),
        ("decode the body (orjson.loads)", {k: s.cost("loads") for k, s in servers.items()}),
        ("free the decoded Pod", dict(free)),
    ]
    review: dict[str, dict[str, float | None]] = {}
    for stage, targets in list(REVIEW_STAGES.items())[1:]:
        review[stage] = {"ceiling": None, "token-projector": counted.stage(size, targets)}
        if compiled:
            review[stage][compiled] = servers[compiled].cost(*(compiled_name(t) for t in targets))
    whole = counted.per_call[size]["review_body"] - counted.per_call[size]["nothing"]
    decode_in_review = counted.stage(size, REVIEW_STAGES["decode (orjson.loads, in review_body)"]) or 0
    rest: dict[str, float | None] = {
        "ceiling": None,
        "token-projector": whole - decode_in_review - sum(c["token-projector"] or 0 for c in review.values()),
    }
    if compiled:
        body = servers[compiled].cost("CPyDef_review___review_body") - servers[compiled].cost("loads")
        rest[compiled] = body - free[compiled] - sum(c[compiled] or 0 for c in review.values())
    table += [*review.items(), ("rest of the review (its answer, the patch in base64, audit annotations)", rest)]
    table.append(("encode the answer (orjson.dumps)", {k: s.cost("dumps") for k, s in servers.items()}))
    for name, variant in SERVER_STAGES.items():
        table.append((name, {"ceiling": None, **dict.fromkeys(kinds[1:], counted.server(size, variant))}))
    table.append(("garbage collection", {k: s.collector for k, s in servers.items()}))
    claimed = {k: sum(cells.get(k) or 0 for _, cells in table) for k in kinds}
    table.append(("aiohttp, asyncio and the handler (the rest)", {k: s.total - claimed[k] for k, s in servers.items()}))
    table.append(("total per request", {k: s.total for k, s in servers.items()}))
    return table


def print_breakdown(sizes: tuple[int, ...], *, servers: dict[int, dict[str, Server]], counted: Counted) -> None:
    kinds = list(servers[sizes[0]])
    compiled = kinds[2] if len(kinds) > 2 else None
    print("## Where the instructions go, stage by stage (instructions per request)")
    print()
    print(
        "C stages from each server's own profile, taken in a second process with the cyclic collector off (the "
        "collector's own cost from the first); Python stages of the review counted in-process by taking each out "
        "(bench/stages.py); the mypyc column's review stages from its compiled functions' profile."
    )
    if counted.not_counted:
        print()
        print("Not counted (function gone, not called, or its result changed by the review): "
              + ", ".join(f"{t} ({why})" for t, why in counted.not_counted.items()))  # fmt: skip
    for size in sizes:
        table = rows(size, servers=servers[size], counted=counted, compiled=compiled)
        print()
        print(f"### {size} container{'s' if size > 1 else ''}")
        print()
        print("| stage | " + " | ".join(kinds) + " | token-projector less ceiling |")
        print("|" + " --- |" * (len(kinds) + 2))
        for stage, cells in table:
            shown = [f"{cells[k]:,.0f}" if cells.get(k) is not None else "" for k in kinds]
            difference = (cells.get("token-projector") or 0) - (cells.get("ceiling") or 0)
            print(f"| {stage} | " + " | ".join(shown) + f" | {difference:+,.0f} |")
