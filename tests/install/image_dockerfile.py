"""A Dockerfile read the way ``docker build`` reads it, so the engine-less image tests follow the file itself.

Only what the build and run helpers act on is modelled: stages (``FROM ... AS name``, with global
``ARG`` defaults substituted), and per stage its ``ENV`` (``$VAR``/``${VAR}`` expanded against the
base image's environment and earlier instructions), ``ARG``, ``WORKDIR``, ``COPY``, ``RUN``,
``USER``, ``ENTRYPOINT`` and ``CMD``. An instruction this reading cannot honour (``SHELL``, ``ADD``,
``ONBUILD``, a heredoc, a ``.dockerignore`` exception) raises ``Unsupported`` naming it, so a
Dockerfile that outgrows the helpers fails loudly instead of being built differently.
"""

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

IGNORED = frozenset({"EXPOSE", "LABEL", "MAINTAINER", "STOPSIGNAL", "HEALTHCHECK", "VOLUME"})
"""Instructions that change nothing a process in the container sees (metadata, or engine-side only)."""
MODELLED = frozenset({"ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD"})

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class Unsupported(Exception):
    """The Dockerfile uses something the engine-less helpers do not reproduce."""


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` and what follows it, in order; ``steps`` keeps COPY/RUN/WORKDIR/USER order for the build."""

    name: str | None
    base: str
    steps: tuple[tuple[str, str], ...]
    env: dict[str, str] = field(hash=False)
    """The environment a process in this stage starts with: the base image's, then this stage's ARG/ENV."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        users = [rest for keyword, rest in self.steps if keyword == "USER"]
        return users[-1] if users else "0"

    @property
    def workdir(self) -> str:
        workdir = "/"
        for keyword, rest in self.steps:
            if keyword == "WORKDIR":
                workdir = resolve(workdir, rest)
        return workdir

    @property
    def copies(self) -> list[Copy]:
        return [parse_copy(rest) for keyword, rest in self.steps if keyword == "COPY"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comment lines dropped, as Docker does."""
    if re.search(r"<<-?\w", text):
        raise Unsupported("heredocs")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def expand(value: str, env: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda match: env.get(match.group(1) or match.group(2), ""), value)


def stages(text: str, *, base_env: "BaseEnv") -> list[Stage]:
    """Every stage of the Dockerfile ``text``; ``base_env`` gives a base image's own environment by name."""
    global_args: dict[str, str] = {}
    parsed: list[tuple[str | None, str, list[tuple[str, str]]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            base, *name = re.split(r"\s+as\s+", expand(rest, global_args), maxsplit=1, flags=re.IGNORECASE)
            parsed.append((name[0].strip() if name else None, base.strip(), []))
        elif not parsed and keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default
        elif keyword not in MODELLED | IGNORED:
            raise Unsupported(f"the {keyword} instruction")
        elif keyword in MODELLED:
            parsed[-1][2].append((keyword, rest))
    return [_stage(name, base, steps, base_env=base_env) for name, base, steps in parsed]


class BaseEnv:
    """A base image's own environment, which ``$PATH`` in an ``ENV`` line expands against."""

    def __init__(self, known: dict[str, dict[str, str]]) -> None:
        self.known = known

    def __call__(self, base: str) -> dict[str, str]:
        repository = base.split(":", 1)[0]
        if repository not in self.known:
            raise Unsupported(f"the base image {base} (no stand-in for {repository!r})")
        return dict(self.known[repository])


def _stage(name: str | None, base: str, steps: list[tuple[str, str]], *, base_env: BaseEnv) -> Stage:
    env = base_env(base)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    kept: list[tuple[str, str]] = []
    for keyword, rest in steps:
        if keyword == "ENV":
            env.update(_pairs(rest, env))
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            env.setdefault(key, expand(default, env))
        elif keyword in ("ENTRYPOINT", "CMD"):
            form = tuple(json.loads(rest)) if rest.startswith("[") else ("/bin/sh", "-c", rest)
            entrypoint, cmd = (form, ()) if keyword == "ENTRYPOINT" else (entrypoint, form)
        else:  # the shell expands a RUN line's variables itself, at build time
            kept.append((keyword, rest if keyword == "RUN" else expand(rest, env)))
    return Stage(name=name, base=base, steps=tuple(kept), env=env, entrypoint=entrypoint, cmd=cmd)


def _pairs(rest: str, env: dict[str, str]) -> dict[str, str]:
    tokens = shlex.split(rest)
    if "=" not in tokens[0]:  # the legacy form: ENV KEY value with spaces
        return {tokens[0]: expand(" ".join(tokens[1:]), env)}
    # Every value in one ENV line sees the environment as it was before that line.
    return {key: expand(value, env) for key, _, value in (token.partition("=") for token in tokens)}


def parse_copy(rest: str) -> Copy:
    words = shlex.split(rest)
    from_stage = None
    while words[0].startswith("--"):
        flag, _, value = words.pop(0).partition("=")
        if flag != "--from":
            raise Unsupported(f"COPY {flag}")
        from_stage = value
    return Copy(sources=tuple(words[:-1]), destination=words[-1], from_stage=from_stage)


def resolve(workdir: str, path: str) -> str:
    """``path`` as the image sees it: relative paths are taken from the WORKDIR; a trailing / is kept."""
    joined = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
    return re.sub(r"/(\./)+", "/", joined.replace("//", "/"))


def dockerignore(context: Path) -> list[str]:
    """The context's ``.dockerignore`` patterns; exceptions (``!pattern``) are refused, not half-applied."""
    file = context / ".dockerignore"
    patterns = [line.strip() for line in file.read_text().splitlines()] if file.exists() else []
    patterns = [pattern.rstrip("/") for pattern in patterns if pattern and not pattern.startswith("#")]
    if any(pattern.startswith("!") for pattern in patterns):
        raise Unsupported(".dockerignore exceptions (!pattern)")
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether the context path ``relative`` (or a folder above it) matches a ``.dockerignore`` pattern."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        anywhere = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], anywhere):
                return True
    return False
