"""Microbenchmark of the pure review across Pod sizes, with the cost per container.

Times token-projector's own work on each body as the server does it (``review_body()`` less the
decoding: the search of the bytes for the env var's name, then the review of the decoded body), for
Pods of 1, 10, 50 and 200 containers, and fits the per-container slope to it. For scale, orjson's
decoding of the same body (which the ceiling pays too), and ``review()`` on the decoded body alone,
the path that reads every env entry (taken when the env var's name is in the body).
Each figure is the median of 7 rounds that interleave the sizes, each round a batch of at least 0.2 s.
For scale, the same run times ``jsonpatch.make_patch`` (how many Python webhooks build their patch)
on the same Pods.
Usage: python bench/micro.py
"""

import base64
import copy
import statistics
import timeit
from collections.abc import Callable
from functools import partial

import jsonpatch
import orjson

from bench.payloads import pod_review
from webhook.core.contract import Contract
from webhook.core.document import absent_names
from webhook.core.review import Reviewed, review

SIZES = (1, 10, 50, 200)
COLUMNS = ("ours", "decode", "review", "make_patch")


def ours(raw: bytes, body: object, contract: Contract) -> Reviewed:
    """What ``review_body(raw)`` does after decoding ``raw`` into ``body``."""
    return review(body, contract, absent=absent_names(raw, (contract.env_var,)))


ROUNDS = 7


def one_batch(timer: timeit.Timer, number: int) -> float:
    return timer.timeit(number=number) / number


def main() -> None:
    contract = Contract()
    timers: dict[int, dict[str, tuple[timeit.Timer, int]]] = {}
    sizes_kib: dict[int, float] = {}
    for size in SIZES:
        body = pod_review(size)
        raw = orjson.dumps(body)
        sizes_kib[size] = len(raw) / 1024
        ops = orjson.loads(base64.b64decode(review(body, contract).response["response"]["patch"]))
        patched = jsonpatch.apply_patch(copy.deepcopy(body["request"]["object"]), ops)
        functions: dict[str, Callable[[], object]] = {
            "ours": partial(ours, raw, body, contract),
            "decode": partial(orjson.loads, raw),
            "review": partial(review, body, contract),
            "make_patch": partial(jsonpatch.make_patch, body["request"]["object"], patched),
        }
        timers[size] = {}
        for name, function in functions.items():
            timer = timeit.Timer(function)
            timers[size][name] = (timer, timer.autorange()[0])
    # Rounds interleave the sizes, so that drift on a shared machine hits every size alike.
    samples: dict[tuple[int, str], list[float]] = {}
    for _ in range(ROUNDS):
        for size in SIZES:
            for name, (timer, number) in timers[size].items():
                samples.setdefault((size, name), []).append(one_batch(timer, number))
    rows = []
    for size in SIZES:
        medians = {name: statistics.median(samples[(size, name)]) for name in COLUMNS}
        rows.append((size, sizes_kib[size], medians["ours"], medians))
    slope, intercept = statistics.linear_regression([r[0] for r in rows], [r[2] for r in rows])
    fitted = [intercept + slope * r[0] for r in rows]
    worst = max(abs(r[2] - f) for r, f in zip(rows, fitted, strict=True))
    print(
        "| containers | body KiB | ours µs | ours per container µs | orjson decode µs "
        "| review() reading every env entry µs | make_patch µs | make_patch / ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for count, kib, own, m in rows:
        print(
            f"| {count} | {kib:.1f} | {own * 1e6:.1f} | {own * 1e6 / count:.2f} | {m['decode'] * 1e6:.1f} "
            f"| {m['review'] * 1e6:.1f} | {m['make_patch'] * 1e6:,.0f} | {m['make_patch'] / own:.0f}x |"
        )
    print()
    print(
        f"# linear fit: ours = {intercept * 1e6:.1f} µs + {slope * 1e6:.2f} µs x containers; "
        f"largest distance from the line: {worst * 1e6:.1f} µs"
    )


if __name__ == "__main__":
    main()
