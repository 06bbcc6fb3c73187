"""Kubernetes objects from files, directories and standard input, each with where it came from.

What people have at hand is manifests: YAML or JSON, several documents per file, ``kind: List``,
folders of them, or ``helm template ... | token-projector review -``. Every object comes back with
its file, its document's index and, for YAML, its line, so a message can point at it; a document
that cannot be read is returned as such, in its place, and never hides the others: the file is
cut at its ``---`` lines first (no YAML content may start a line with ``---``), and each part is
parsed on its own.

YAML is read with PyYAML's safe loader. It keeps the line and column of every node (so every
error names them), it is the YAML library the official Kubernetes client itself depends on, and
it reads YAML 1.1 as kubectl does (``sigs.k8s.io/yaml`` is go-yaml v2: ``on``/``yes`` are booleans,
``0644`` is octal). Where kubectl is stricter, so are we: a key given twice is an error, a date is
kept as the string it is, and a value that JSON cannot hold (binary, a set, NaN) is refused.
Aliases are expanded with a bound, so a "billion laughs" document is refused, not expanded.
"""

import functools
import itertools
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from webhook.core.messages import kind_of
from webhook.core.wire import Json
from webhook.errors import ConfigError

SUFFIXES = (".yaml", ".yml", ".json")
"""The files a directory is searched for, recursively."""
STDIN = "<stdin>"
MAX_DEPTH = 100
"""Kubernetes objects nest a few dozen levels at most; deeper is not a manifest."""
MAX_VALUES = 1_000_000
"""Values in one document once aliases are expanded: far above any real object."""

_SEPARATOR = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_NOTHING = re.compile(r"^(?:[ \t]*(?:#.*)?|%.*)$")


@dataclass(frozen=True, kw_only=True)
class Document:
    """One YAML or JSON document of a file, read or not."""

    source: str
    index: int
    """1-based, in the order of the file."""
    line: int | None
    """1-based line where the document (or its error) is, when known."""
    value: object = None
    error: str | None = None
    item_lines: tuple[int | None, ...] = ()
    """For a ``List``: the line of each item."""
    raw: bytes | None = None
    """The file's bytes, when the whole file is this one JSON document (an AdmissionReview is answered from them)."""

    def where(self, item: int | None = None) -> str:
        """``file: document N, item M (line L)``, for messages; ``""`` for a whole file (its error names it)."""
        if self.index == 0:
            return ""
        at = f"{self.source}: document {self.index}"
        if item is not None:
            at += f", item {item}"
        line = self.item_lines[item - 1] if item is not None and item <= len(self.item_lines) else self.line
        return f"{at} (line {line})" if line else at


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One Kubernetes object found in a document (a List's item has its 1-based ``item``)."""

    document: Document
    item: int | None
    obj: Json | None
    error: str | None = None


def read_all(paths: Sequence[str], *, stdin: BinaryIO) -> list[Document]:
    """Every document under ``paths`` (``-`` is standard input), in order; errors are documents too."""
    documents: list[Document] = []
    for name, path in _files(paths):
        if isinstance(path, str):  # the reason the path yields nothing
            documents.append(Document(source=name, index=0, line=None, error=path))
            continue
        try:
            raw = stdin.read() if path is None else path.read_bytes()
        except OSError as error:
            documents.append(Document(source=name, index=0, line=None, error=f"cannot read {name}: {error.strerror}"))
            continue
        documents += parse(name, raw, json_only=name.endswith(".json"))
    return documents


def parse(source: str, raw: bytes, *, json_only: bool = False) -> list[Document]:
    """The documents of one file's bytes: JSON if they are JSON, else YAML (never YAML for ``.json``)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if json_only:
            at = f"line {error.lineno}, column {error.colno}"
            return [Document(source=source, index=1, line=error.lineno, error=f"is not JSON ({at}): {error.msg}")]
    else:
        return [Document(source=source, index=1, line=1, value=value, raw=raw)]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return [Document(source=source, index=1, line=None, error=f"is not UTF-8 text (byte {error.start})")]
    return _yaml_documents(source, text)


def entries(document: Document) -> list[Entry]:
    """The objects of a document: itself, or each item of a ``List`` (``kind: PodList`` and the like too)."""
    value = document.value
    if document.error is not None or value is None:
        return []
    if not isinstance(value, dict):
        return [Entry(document=document, item=None, obj=None, error=f"is {kind_of(value)}, not a Kubernetes object")]
    kind = value.get("kind")
    items = value.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        # A typed list (PodList) may leave kind out of its items, as the API server does.
        item_kind = kind[: -len("List")] if kind != "List" else None
        found = []
        for number, item in enumerate(items, start=1):
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"kind": item_kind, "apiVersion": value.get("apiVersion"), **item}
            found.append(_entry(document, item, number))
        return found
    return [_entry(document, value, None)]


def _entry(document: Document, value: object, item: int | None) -> Entry:
    if not isinstance(value, dict):
        return Entry(document=document, item=item, obj=None, error=f"is {kind_of(value)}, not a Kubernetes object")
    kind = value.get("kind")
    if not isinstance(kind, str) or not kind:
        return Entry(document=document, item=item, obj=None, error="has no kind, so it is not a Kubernetes object")
    return Entry(document=document, item=item, obj=value)


def _files(paths: Sequence[str]) -> Iterator[tuple[str, Path | str | None]]:
    """Each input file as (name, path), ``None`` for standard input, or (name, reason) when it yields nothing."""
    for given in paths:
        if given == "-":
            yield STDIN, None
            continue
        path = Path(given)
        if not path.is_dir():
            yield given, path if path.exists() else f"cannot read {given}: No such file or directory"
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            found += [Path(folder) / name for name in sorted(names) if name.endswith(SUFFIXES)]
        if not found:
            yield given, f"{given} is a directory without {', '.join('*' + s for s in SUFFIXES)} files"
        for file in found:
            yield str(file), file


def _parts(text: str) -> Iterator[tuple[int, str]]:
    """The file cut before each ``---`` line, with the 0-based line each part starts at."""
    starts = [m.start() for m in _SEPARATOR.finditer(text)]
    bounds = [0, *[s for s in starts if s > 0], len(text)]
    pieces = [(text.count("\n", 0, a), text[a:b]) for a, b in itertools.pairwise(bounds)]
    # What comes before the first separator may be comments or a %YAML directive: it belongs to it.
    if len(pieces) > 1 and all(_NOTHING.match(line) for line in pieces[0][1].splitlines()):
        pieces[1] = (pieces[0][0], pieces[0][1] + pieces[1][1])
        del pieces[0]
    yield from pieces


def _yaml_documents(source: str, text: str) -> list[Document]:
    yaml = _yaml()
    documents: list[Document] = []
    for offset, part in _parts(text):
        loader = _loader()(part)
        try:
            while loader.check_node():
                node = loader.get_node()
                documents.append(_document(source, len(documents) + 1, offset, node, loader))
        except yaml.MarkedYAMLError as error:
            said = []
            for text, mark in ((error.context, error.context_mark), (error.problem, error.problem_mark)):
                if text:
                    said.append(f"{text} at line {offset + mark.line + 1}, column {mark.column + 1}" if mark else text)
            mark = error.problem_mark or error.context_mark
            line = offset + mark.line + 1 if mark is not None else None
            message = "is not valid YAML: " + ("; ".join(said) or "unreadable")
            documents.append(Document(source=source, index=len(documents) + 1, line=line, error=message))
        except yaml.YAMLError as error:
            documents.append(
                Document(source=source, index=len(documents) + 1, line=None, error=f"is not valid YAML: {error}")
            )
        except RecursionError:
            documents.append(
                Document(source=source, index=len(documents) + 1, line=offset + 1, error="is nested too deeply")
            )
        finally:
            loader.dispose()
    return documents


def _document(source: str, index: int, offset: int, node: Any, loader: Any) -> Document:
    line = offset + node.start_mark.line + 1
    try:
        value = _json_value(loader.construct_document(node))
    except _Unusable as error:
        return Document(source=source, index=index, line=line, error=str(error))
    return Document(source=source, index=index, line=line, value=value, item_lines=_item_lines(node, offset))


def _item_lines(node: Any, offset: int) -> tuple[int | None, ...]:
    for key, value in getattr(node, "value", ()) if node.id == "mapping" else ():
        if getattr(key, "value", None) == "items" and value.id == "sequence":
            return tuple(offset + item.start_mark.line + 1 for item in value.value)
    return ()


class _Unusable(Exception):
    """A document that parsed as YAML but holds what no Kubernetes object can."""


def _json_value(value: object) -> object:
    """``value`` as JSON would hold it, aliases expanded within ``MAX_VALUES``; raises ``_Unusable``."""
    budget = [MAX_VALUES]
    active: set[int] = set()

    def walk(v: object, depth: int) -> object:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Unusable(f"expands to more than {MAX_VALUES} values (aliases referring to aliases?)")
        if depth > MAX_DEPTH:
            raise _Unusable(f"is nested more than {MAX_DEPTH} levels deep")
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _Unusable(f"holds {v}, which JSON (and so Kubernetes) cannot")
            return v
        if isinstance(v, dict | list):
            if id(v) in active:
                raise _Unusable("holds an alias to itself")
            active.add(id(v))
            try:
                if isinstance(v, list):
                    return [walk(x, depth + 1) for x in v]
                return {_key(k): walk(x, depth + 1) for k, x in v.items()}
            finally:
                active.discard(id(v))
        raise _Unusable(f"holds a {type(v).__name__} value, which JSON (and so Kubernetes) cannot")

    return walk(value, 0)


def _key(key: object) -> str:
    """A mapping key as ``sigs.k8s.io/yaml`` turns it into JSON: the text of a number or a boolean."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float) or key is None:
        return "null" if key is None else str(key)
    raise _Unusable(f"has a {type(key).__name__} as a mapping key")


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading YAML needs PyYAML: pip install 'token-projector[review]'") from None
    return yaml


@functools.cache
def _loader() -> Any:
    """PyYAML's safe loader, made as strict as kubectl: no duplicate keys, dates kept as text."""
    yaml = _yaml()

    class Loader(yaml.SafeLoader):  # type: ignore[name-defined,misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            "while reading a mapping",
                            node.start_mark,
                            f"key {key.value!r} is given twice",
                            key.start_mark,
                        )
                    seen.add(key.value)
            return super().construct_mapping(node, deep=deep)

    timestamp = "tag:yaml.org,2002:timestamp"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != timestamp]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Loader
