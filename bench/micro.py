"""Microbenchmark of the pure review across Pod sizes, with the cost per container.

Times token-projector's own work on each body as the server does it (``review_body()`` less the
decoding: the search of the bytes for the env var's name, then the review of the decoded body), for
Pods of 1, 10, 50 and 200 containers, and fits the per-container slope to it. For scale, orjson's
decoding of the same body (which the ceiling pays too), and ``review()`` on the decoded body alone,
the path that reads every env entry (taken when the env var's name is in the body).
Each figure is the median of 7 rounds that interleave the sizes, each round a batch of at least 0.2 s.
For scale, the same run times ``jsonpatch.make_patch`` (how many Python webhooks build their patch)
on the same Pods. A second table is the curve over audiences: the 10-container Pod asking for 1, 2,
4 and 8 audiences (one token file each, plus the primary's), timed in the same rounds.
Usage: python -m bench.micro
"""

import base64
import copy
import statistics
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import jsonpatch
import orjson

from bench.payloads import pod_review
from webhook.core.contract import Contract
from webhook.core.review import AbsentFrom, Reviewed, review

SIZES = (1, 10, 50, 200)
COLUMNS = ("ours", "decode", "review", "make_patch")
AUDIENCES = (1, 2, 4, 8)
AUDIENCES_CONTAINERS = 10
"""The Pod size of the audience curve: a typical Deployment's Pod, not the extremes."""


def ours(raw: bytes, body: object, contract: Contract) -> Reviewed:
    """What ``review_body(raw)`` does after decoding ``raw`` into ``body``."""
    return review(body, contract, absent=AbsentFrom(raw))


def with_audiences(body: dict[str, Any], count: int) -> dict[str, Any]:
    """``body`` with its Pod asking for ``count`` audiences: the fixture's own first, then others."""
    body = copy.deepcopy(body)
    annotations = body["request"]["object"]["metadata"]["annotations"]
    first = annotations["token-projector.io/audience"]
    annotations["token-projector.io/audience"] = ", ".join([first, *(f"service-{i}" for i in range(1, count))])
    return body


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
    curve: dict[int, tuple[timeit.Timer, int]] = {}
    for count in AUDIENCES:
        body = with_audiences(pod_review(AUDIENCES_CONTAINERS), count)
        raw = orjson.dumps(body)
        assert review(body, contract).outcome == "mutated", "every point of the curve is a patched Pod"
        timer = timeit.Timer(partial(ours, raw, body, contract))
        curve[count] = (timer, timer.autorange()[0])
    # Rounds interleave the sizes, so that drift on a shared machine hits every size alike.
    samples: dict[tuple[int, str], list[float]] = {}
    curve_samples: dict[int, list[float]] = {}
    for _ in range(ROUNDS):
        for size in SIZES:
            for name, (timer, number) in timers[size].items():
                samples.setdefault((size, name), []).append(one_batch(timer, number))
        for count, (timer, number) in curve.items():
            curve_samples.setdefault(count, []).append(one_batch(timer, number))
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
    print()
    one = statistics.median(curve_samples[1])
    print(f"| audiences ({AUDIENCES_CONTAINERS} containers) | ours µs | more than 1 audience µs | / 1 audience |")
    print("| --- | --- | --- | --- |")
    for count in AUDIENCES:
        median = statistics.median(curve_samples[count])
        print(f"| {count} | {median * 1e6:.1f} | {(median - one) * 1e6:+.1f} | {median / one:.2f}x |")


if __name__ == "__main__":
    main()
