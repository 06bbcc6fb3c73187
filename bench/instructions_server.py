"""Runs one of the benchmark's servers with the wall clock stopped, for the instruction counts of bench/instructions.py.

Some of a server's work is done once a second, not once a request: aiohttp formats the ``Date``
header, and token-projector's log formats its timestamp, when the second changes. Under callgrind
a request takes some 50 times longer than at full speed, so that work would be counted about once
every few requests, more on a slower or busier machine: a few thousand instructions per request
that drift from run to run, and that at production rates come to nearly nothing per request. With
``time.time`` returning one fixed moment, it is done once, before counting starts. Nothing else
reads the wall clock per request (asyncio's timers and our latency use the monotonic clocks), so
every server does exactly the work it does at full speed. Only the benchmark runs servers this way.

``--no-collector`` also turns CPython's cyclic garbage collector off, for the stage-by-stage
breakdown only: a collection runs inside whatever allocation crosses the threshold, so with the
collector on, its cost would hide in the profile of some stage; with it off, each stage's profile
is its own, and the collector's cost is the difference of the two totals.
Usage: python bench/instructions_server.py [--no-collector] (MODULE | SCRIPT.py) ARGUMENTS...
"""

import gc
import itertools
import runpy
import sys
import time

FROZEN = 1767225600.0
"""2026-01-01T00:00:00Z: when the servers under callgrind think it is."""


def main() -> None:
    arguments = sys.argv[1:]
    if arguments[:1] == ["--no-collector"]:
        arguments = arguments[1:]
        gc.disable()  # the servers' start-up gc.collect() and gc.freeze() leave it off
    target, *arguments = arguments
    # A C-level callable, as cheap as the real time.time, so no count grows by the freeze itself.
    time.time = itertools.repeat(FROZEN).__next__
    sys.argv = [target, *arguments]
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
