"""The process that bench/stages.py counts under callgrind: runs one stage of a review, N times, on command.

Reads commands on stdin, one a line, answers each with one line on stdout:
``load SIZE FILE`` reads the AdmissionReview body of a SIZE-container Pod from FILE;
``run SIZE VARIANT COUNT`` calls VARIANT on it COUNT times; ``stop`` ends. The parent counts the
instructions between two idle moments (this process blocked reading stdin), so nothing but the
calls is in a count. It imports only ``webhook`` and its dependencies, never ``bench``, so that it
runs against whichever build of the core the interpreter has (the source, or a compiled one).

A stage inside the review is counted by taking it out: ``without:NAME`` runs ``review_body`` with
the function NAME (``module:function`` under ``webhook.core``) replaced, in every module that
imported it, by a replay of the results it returned for the same body (put in before the calls
and taken out after them, outside the count). The stage then costs what ``review_body`` costs with
it, less what it costs with the replay, plus the replay's own call (variant ``replay-call:NAME``).
This needs no knowledge of any stage's parameters, so it keeps working while the core changes: a
name that is gone is answered ``missing``, and one whose replayed result the review changes (the
answer differs) ``changed``. A compiled core calls its functions directly, past any replacement:
there, bench/stages.py reads the stages from the compiled server's own profile instead.
"""

import gc
import importlib
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from webhook.core.contract import Contract
from webhook.core.review import Reviewed, review_body

FROZEN = 1767225600.0
"""The log line's time, as bench/instructions_server.py freezes it for the servers."""


class Replay:
    """Stands in for a function: returns, in turn, the results it returned during one real review."""

    def __init__(self, results: list[Any]) -> None:
        self.results, self.next = results, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.results[self.next]
        self.next = (self.next + 1) % len(self.results)
        return result


def bound_in(original: object) -> list[tuple[Any, str]]:
    """Every (module, attribute) of webhook that holds ``original``: where a replay must go."""
    return [
        (module, name)
        for module_name, module in list(sys.modules.items())
        if module_name.startswith("webhook") and module is not None
        for name, value in list(vars(module).items())
        if value is original
    ]


Variant = tuple[Callable[[], object], Callable[[], None], Callable[[], None]]
"""What a ``run`` calls COUNT times, and what it does once before and once after (outside every count)."""


def _nothing() -> None:
    return None


def replaced(target: str, raw: bytes, contract: Contract) -> tuple[Variant, Variant] | str:
    """``review_body`` with ``target`` replayed, and the replay's own call; or why there are none."""
    module_name, _, function_name = target.partition(":")
    try:
        original = getattr(importlib.import_module(f"webhook.core.{module_name}"), function_name)
    except (ImportError, AttributeError):
        return "missing"
    places = bound_in(original)
    results: list[Any] = []
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        results.append(result)
        calls.append((args, kwargs))
        return result

    def put(value: object) -> None:
        for module, name in places:
            setattr(module, name, value)

    put(record)
    try:
        expected = orjson.dumps(review_body(raw, contract).response)
    finally:
        put(original)
    if not results:
        return "missing"  # not called for this Pod
    replay = Replay(results)
    put(replay)
    try:
        same = orjson.dumps(review_body(raw, contract).response) == expected
    finally:
        put(original)
    if not same:
        return "changed"
    args, kwargs = calls[0]

    def review() -> object:
        return review_body(raw, contract)

    def replay_call() -> object:
        return replay(*args, **kwargs)

    return (review, lambda: put(replay), lambda: put(original)), (replay_call, _nothing, _nothing)


def decode_and_free(raw: bytes) -> Variant:
    """The body decoded and freed at once; less orjson's ``loads`` as the servers' profiles count it, the freeing."""

    def decode() -> None:
        orjson.loads(raw)

    return decode, _nothing, _nothing


def server_variants(reviewed: Reviewed) -> dict[str, Callable[[], object]]:
    """The server's own per-request work past the review, as webhook.server does it."""
    from webhook.server import app, logs
    from webhook.server.metrics import Metrics

    handler = logs.JsonLines(os.open(os.devnull, os.O_WRONLY))
    metrics = Metrics().requests
    log_fields: Callable[..., dict[str, object]] | None = getattr(app, "_log_fields", None)

    def log_line() -> None:
        fields = log_fields(reviewed, refusal="") if log_fields else {}
        fields.update(outcome=reviewed.outcome, code=200, latency_ms=0.412)
        # No event loop here: JsonLines writes the line at once, as the benchmark's server does.
        handler.write_info("token_projector.server", "admission review", fields)

    def count() -> None:
        metrics.in_flight += 1
        metrics.in_flight -= 1
        metrics.answered(reviewed.outcome, 200, seconds=0.000412)

    return {"log-line": log_line, "metrics": count}


def main() -> None:
    time.time = itertools.repeat(FROZEN).__next__  # the log line's timestamp: formatted once, as in the servers
    contract = Contract()
    variants: dict[int, dict[str, Variant]] = {}
    for line in sys.stdin:
        command, *words = line.split()
        if command == "stop":
            break
        if command == "load":
            size, raw = int(words[0]), Path(words[1]).read_bytes()
            reviewed = review_body(raw, contract)

            def review(raw: bytes = raw) -> object:  # the same kind of call as each variant without a stage
                return review_body(raw, contract)

            variants[size] = {
                "nothing": (_nothing, _nothing, _nothing),
                "review_body": (review, _nothing, _nothing),
                "decode-free": decode_and_free(raw),
                **{name: (call, _nothing, _nothing) for name, call in server_variants(reviewed).items()},
            }
            answers = []
            for target in words[2:]:
                made = replaced(target, raw, contract)
                if isinstance(made, str):
                    answers.append(f"{target}={made}")
                    continue
                variants[size][f"without:{target}"], variants[size][f"replay-call:{target}"] = made
                answers.append(f"{target}=ok")
            print(" ".join(answers) or "ok", flush=True)
            # The server's collections are counted apart (in its profile): none may land in a stage here.
            gc.collect()
            gc.freeze()
            gc.disable()
        elif command == "run":
            size, name, count = int(words[0]), words[1], int(words[2])
            call, before, after = variants[size][name]
            before()
            for _ in range(count):
                call()
            after()
            print("ok", flush=True)


if __name__ == "__main__":
    main()
