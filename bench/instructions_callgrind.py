"""Callgrind as an instruction meter, read from outside the measured process.

A wall-clock figure mixes our Python work with the machine's per-request system costs, which drift
from run to run; the count of CPU instructions a process executes for the same input does not. This
module starts a process under ``valgrind --tool=callgrind`` with instrumentation off (start-up runs
some 50 times faster that way, and is not what we measure), then drives it with ``callgrind_control``:
instrumentation on, counters zeroed, counters dumped. ``callgrind_control`` reaches the process
through vgdb even while it sleeps in ``epoll_wait`` or ``read``, so every counted window opens and
closes with the process idle, and no measuring code runs inside it. Callgrind counts user-space
instructions only: what the kernel does for a request (loopback TCP, ``epoll``) is in no count.
"""

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VALGRIND_OPTIONS = (
    "--tool=callgrind",
    "--instr-atstart=no",  # start-up and imports run uninstrumented, and are not counted
    "--dump-line=no",  # per-function costs are all we read: smaller dumps, written faster
)
DETERMINISTIC_ENV = {
    # Randomised str hashes would change dict and set probing, and so the instructions, from run to run.
    "PYTHONHASHSEED": "0",
    # glibc copies and fills blocks of over ~2 KiB with one ``rep movsb`` / ``rep stosb``, which
    # valgrind counts once per byte: a copy of the body would weigh 32 times what the same copy
    # costs in glibc's vector loop (and whether a realloc moves a buffer would move the count by
    # a percent). These thresholds keep glibc on its vector loops, which it counts as they run.
    "GLIBC_TUNABLES": "glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000",
}

_SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)
"""The instructions executed between the dump and the zero or dump before it. (Not ``totals:``, which
after a zero also holds costs carried by the calls that were open then: some 2% more, once.)"""
_INCLUSIVE_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?([^\s:]+):(\S+)")
"""``callgrind_annotate`` lines: ``cost  file:function [object]``; ``function'2`` is a recursion level."""


def missing_tools() -> list[str]:
    """The programs this meter needs that are not on ``PATH``."""
    return [tool for tool in ("valgrind", "callgrind_control", "callgrind_annotate") if not shutil.which(tool)]


@dataclass
class Metered:
    """A process running under callgrind, and the dumps taken of it so far."""

    process: "subprocess.Popen[bytes]"
    out_file: Path
    dumps: list[Path] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        command: list[str],
        *,
        out_file: Path,
        log: Path,
        pass_stdio: bool = False,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> "Metered":
        """Start ``command`` under callgrind; with ``pass_stdio`` its stdin and stdout are pipes to us."""
        pipe = subprocess.PIPE if pass_stdio else subprocess.DEVNULL
        process = subprocess.Popen(
            ["valgrind", *VALGRIND_OPTIONS, f"--callgrind-out-file={out_file}", *command],
            stdin=pipe,
            stdout=pipe,
            stderr=log.open("wb"),
            cwd=cwd,
            env={**os.environ, **(env or {}), **DETERMINISTIC_ENV},
        )
        return cls(process=process, out_file=out_file)

    def _control(self, *arguments: str) -> None:
        # valgrind execs its tool in place, so the pid we started is the pid callgrind answers to.
        done = subprocess.run(
            ["callgrind_control", *arguments, str(self.process.pid)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0 or "OK." not in done.stdout:
            raise SystemExit(f"callgrind_control {' '.join(arguments)} failed: {done.stdout}{done.stderr}")

    def instrument(self) -> None:
        """Switch instrumentation on: from now on every instruction is counted (until zeroed)."""
        self._control("--instr=on")

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> int:
        """Write the counts since the last zero or dump to a new file (callgrind zeroes them); return the total."""
        self._control("--dump")
        path = Path(f"{self.out_file}.{len(self.dumps) + 1}")
        self.dumps.append(path)
        return totals(path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def idle_in_epoll(call: list[str]) -> bool:
    """An event loop with nothing to run: in epoll_wait or epoll_pwait (x86-64: 232, 281), timeout not 0."""
    return call[0] in ("232", "281") and int(call[4], 16) != 0


def reading_stdin(call: list[str]) -> bool:
    """Blocked reading its standard input (x86-64 read is 0, fd 0)."""
    return call[0] == "0" and int(call[1], 16) == 0


def wait_until_blocked(pid: int, accept: Callable[[list[str]], bool], *, timeout: float = 600) -> None:
    """Wait until ``pid`` sleeps in a system call that ``accept`` takes (as /proc/PID/syscall shows it)."""
    deadline = time.monotonic() + timeout
    while True:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "S" and len(call) > 4 and accept(call):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"process {pid} did not go idle")
        time.sleep(0.0005)


def totals(dump: Path) -> int:
    """The instruction count (event ``Ir``) a callgrind dump file holds."""
    found = _SUMMARY.search(dump.read_bytes())
    if found is None:
        raise SystemExit(f"no totals in callgrind dump {dump}")
    return int(found.group(1))


def inclusive_costs(dump: Path) -> dict[str, int]:
    """Each function's inclusive instruction count in ``dump`` (itself and all it calls), by symbol name."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", "--show-percs=no", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        match = _INCLUSIVE_LINE.match(line)
        if match and "'" not in match.group(3):
            function, cost = match.group(3), int(match.group(1).replace(",", ""))
            costs[function] = max(costs.get(function, 0), cost)
    return costs
