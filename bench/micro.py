"""Microbenchmark of the pure review across Pod sizes, with the cost per container.

Times ``review()`` on an already-decoded AdmissionReview (the server's JSON decoding is measured by the
load benchmark), for Pods of 1, 10, 50 and 200 containers, and fits the per-container slope. Each figure
is the median of 7 rounds that interleave the sizes, each round a batch of at least 0.2 s.
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
from webhook.review import review
from webhook.settings import Contract

SIZES = (1, 10, 50, 200)


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
            "review": partial(review, body, contract),
            "decode": partial(orjson.loads, raw),
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
    rows = [
        (size, sizes_kib[size], *(statistics.median(samples[(size, n)]) for n in ("review", "decode", "make_patch")))
        for size in SIZES
    ]
    slope, intercept = statistics.linear_regression([r[0] for r in rows], [r[2] for r in rows])
    fitted = [intercept + slope * r[0] for r in rows]
    worst = max(abs(r[2] - f) / r[2] for r, f in zip(rows, fitted, strict=True))
    print(
        "| containers | body KiB | review() µs | µs per container | orjson decode µs | make_patch µs "
        "| make_patch / review |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for count, kib, ours, decode, baseline in rows:
        print(
            f"| {count} | {kib:.1f} | {ours * 1e6:.1f} | {ours * 1e6 / count:.2f} | {decode * 1e6:.1f} | "
            f"{baseline * 1e6:,.0f} | {baseline / ours:.0f}x |"
        )
    print()
    print(
        f"# linear fit: review() = {intercept * 1e6:.1f} µs + {slope * 1e6:.2f} µs x containers; "
        f"largest deviation from the line: {worst:.0%}"
    )


if __name__ == "__main__":
    main()
