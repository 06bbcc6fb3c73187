"""Builds webhook/core with mypyc into a venv of its own, for the benchmark's compiled-versus-source counts.

Issue 20 allows compiling the pure core with mypyc (Black ships that way). Whether to ship it is
for the figures to decide, so the benchmark builds it on the side: a venv in the user's cache
with the same interpreter and the same versions of every dependency as the running one, and
token-projector installed in it (not editable) with ``webhook/core`` compiled, every module but
``contract.py``: mypyc keeps only the runtime classes of annotations (``Literal[...]`` becomes
``type``), and the command line reads the settings' types from that dataclass to make its flags.
The build is redone when a source file or a version changes. The project's own build is untouched.

``python bench/instructions_mypyc.py run MODULE ARGS...`` runs a benchmark module against the
compiled core (the tree is put last on ``sys.path``, so that ``webhook`` comes from the venv).
Needs a C compiler (gcc) and PyPI. Usage: python bench/instructions_mypyc.py (build | run MODULE ...)
"""

import hashlib
import importlib.metadata
import os
import re
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

NOT_COMPILED = ("__init__.py", "contract.py")
EXTRA = ("jsonpatch",)
"""Past the runtime dependencies: what bench/micro.py imports."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "token-projector" / "bench-mypyc"


def compiled_modules(repo: Path) -> list[str]:
    return sorted(
        f"webhook/core/{p.name}" for p in (repo / "webhook" / "core").glob("*.py") if p.name not in NOT_COMPILED
    )


def pins(repo: Path) -> list[str]:
    """Each dependency at the version the running interpreter has (both builds run the same libraries),
    and the project's build requirements as pyproject.toml states them."""
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in pyproject["project"]["dependencies"]]
    running = [f"{name}=={importlib.metadata.version(name)}" for name in (*names, *EXTRA, "mypy")]
    return running + list(pyproject["build-system"]["requires"])


def fingerprint(repo: Path) -> str:
    digest = hashlib.sha256(" ".join([sys.version, *pins(repo)]).encode())
    for path in sorted((repo / "webhook").rglob("*.py")):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


SETUP = """from mypyc.build import mypycify
from setuptools import setup

setup(ext_modules=mypycify({modules!r}, opt_level="3", group_name="webhook_core"))
"""


def build(repo: Path) -> Path:
    """The python of a venv whose token-projector has the compiled core, built first if need be."""
    venv = cache_dir() / "venv"
    python = venv / "bin" / "python"
    stamp = venv / "built-from"
    wanted = fingerprint(repo)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    if not shutil.which("gcc") and not shutil.which("cc"):
        raise SystemExit("mypyc needs a C compiler: apt-get install gcc")
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *pins(repo)], check=True)
    with tempfile.TemporaryDirectory(prefix="token-projector-mypyc-") as source:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(repo / name, Path(source) / name)
        shutil.copytree(repo / "webhook", Path(source) / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
        (Path(source) / "setup.py").write_text(SETUP.format(modules=compiled_modules(repo)))
        subprocess.run([*pip, "--no-build-isolation", "--no-deps", source], check=True, cwd=source)
    where = subprocess.run(
        [str(python), "-c", "import webhook.core.review as r; print(r.__file__)"],
        capture_output=True, text=True, check=True, cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": ""},
    ).stdout.strip()  # fmt: skip
    if not where.endswith(".so"):
        raise SystemExit(f"the mypyc build left the core uncompiled: {where}")
    stamp.write_text(wanted)
    return python


def micro(python: str, repo: Path, *, compiled: bool) -> dict[int, dict[str, float]]:
    """bench/micro.py's first table, by column name, run by ``python`` against the source or the compiled core."""
    if compiled:  # from outside the tree, whose sources would shadow the compiled core
        command = [python, str(repo / "bench" / "instructions_mypyc.py"), "run", "bench.micro"]
        cwd, path = Path(tempfile.gettempdir()), ""
    else:
        command, cwd, path = [python, "-m", "bench.micro"], repo, str(repo)
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=cwd, env={**os.environ, "PYTHONPATH": path}
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table: dict[int, dict[str, float]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if not cells[0].isdigit():
            break  # the next table
        table[int(cells[0])] = {
            name: float(cell.replace(",", "").rstrip("x")) for name, cell in zip(header, cells, strict=True)
        }
    return table


def compare_micro(repo: Path, *, compiled: str, rounds: int = 2) -> str:
    """bench/micro.py's time of our own work, source and compiled, run in turn ``rounds`` times each.

    Wall-clock times on a shared machine drift between runs: orjson's decoding of the same body,
    the same C code in both builds, is shown from the same runs as the yardstick of that drift.
    """
    runs = []
    for _ in range(rounds):
        runs.append(("source", micro(sys.executable, repo, compiled=False)))
        runs.append(("mypyc", micro(compiled, repo, compiled=True)))
    ours, decode = "ours µs", "orjson decode µs"
    lines = [
        "## bench/micro.py: review_body less decoding (ours), source and mypyc, in turn",
        "",
        "| containers | "
        + " | ".join(f"ours µs, {name} run {i // 2 + 1}" for i, (name, _) in enumerate(runs))
        + " | source / mypyc | "
        + " | ".join(f"decode µs, {name} run {i // 2 + 1}" for i, (name, _) in enumerate(runs))
        + " |",
        "|" + " --- |" * (2 + 2 * len(runs)),
    ]
    for size in runs[0][1]:
        source = statistics.median(t[size][ours] for name, t in runs if name == "source")
        fast = statistics.median(t[size][ours] for name, t in runs if name == "mypyc")
        lines.append(
            f"| {size} | " + " | ".join(f"{t[size][ours]:,.1f}" for _, t in runs) + f" | {source / fast:.2f}x | "
            + " | ".join(f"{t[size][decode]:,.1f}" for _, t in runs) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    if sys.argv[1:2] == ["build"]:
        print(build(repo))
        return
    if sys.argv[1:2] != ["run"] or len(sys.argv) < 3:
        raise SystemExit(__doc__)
    import webhook.core.review

    if not (webhook.core.review.__file__ or "").endswith(".so"):
        raise SystemExit(f"{sys.executable} runs the core uncompiled ({webhook.core.review.__file__})")
    sys.path.append(str(repo))  # last: bench from the tree, webhook from this venv
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
