"""Settings on the command line: one flag and one environment variable per settings field.

The fields of :class:`~webhook.core.contract.Contract` and
:class:`~webhook.server.settings.ServerSettings` are the single source of truth; this module turns
them into argparse flags (with the default and the variable in ``--help``), reads them back from
flags, else the environment, else the defaults, and writes the README's settings tables. It is the
only module that reads ``os.environ``.
"""

import argparse
import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from webhook.core.contract import bad_setting, env_of, flag_of

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_KIND_NAMES: dict[object, str] = {bool: "a boolean (true/false)", int: "a whole number", float: "a number"}

S = TypeVar("S", bound="DataclassInstance")
"""A settings class: ``Contract``, ``ServerSettings``, ``ProxySettings``."""


def _shown_default(value: object) -> str | None:
    """A default as ``--help`` and the README show it; None for an empty one (a list of nothing)."""
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else None


def add_arguments(parser: argparse.ArgumentParser, cls: "type[DataclassInstance]") -> None:
    """Add one flag per field of ``cls``; its help shows the default and the environment variable."""
    group = parser.add_argument_group(f"{cls.__name__} settings", cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        shown = _shown_default(f.default) or "none"
        # argparse %-formats help texts; a literal % in ours must not be taken for a placeholder.
        help_text = f"{f.metadata['help']} (default: {shown}; env {env_of(f.name)})".replace("%", "%%")
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
        if kind is bool:
            group.add_argument(
                flag_of(f.name), dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            group.add_argument(flag_of(f.name), dest=f.name, default=None, choices=choices, help=help_text)


def load(cls: type[S], args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> S:
    """Build ``cls`` from flags (``args``), else the environment, else the defaults."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name, None) if args is not None else None
        if raw is None and env_of(f.name) in environ:
            raw = environ[env_of(f.name)]
        if raw is not None:
            values[f.name] = _convert(f.name, raw, kind=hints[f.name])
    return cls(**values)


def _convert(name: str, raw: object, *, kind: Any) -> object:
    if not isinstance(raw, str):
        return raw  # argparse already gave a typed value (booleans)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        bad_setting(name, raw, allowed=_KIND_NAMES[kind])
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if typing.get_origin(kind) is Literal and raw not in typing.get_args(kind):
        bad_setting(name, raw, allowed="one of " + ", ".join(typing.get_args(kind)))
    return raw


def settings_table(cls: "type[DataclassInstance]") -> str:
    """The Markdown table of ``cls``'s settings, as the README shows it."""
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        shown = _shown_default(f.default)
        cell = f"`{shown}`" if shown is not None else "none"
        rows.append(f"| `{flag_of(f.name)}` | `{env_of(f.name)}` | {cell} | {f.metadata['help']} |")
    return "\n".join(rows)
