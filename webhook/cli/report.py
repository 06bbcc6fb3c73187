"""Printing what ``review`` and ``audit`` found: an aligned table for people, JSON or YAML for programs.

The rows are built by the commands; this module only lays them out, so that both commands
print alike and a table never needs a second library.
"""

from collections.abc import Sequence
from typing import Any

import orjson

from webhook.errors import ConfigError

OUTPUTS = ("table", "json", "yaml")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column runs free (it holds the long messages)."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines) + "\n"


def as_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def as_yaml(value: Any) -> str:
    """``value`` as one YAML document, keys in the order they were built (as kubectl prints)."""
    text: str = _yaml().safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
    return text


def as_yaml_stream(documents: Sequence[tuple[str, Any]]) -> str:
    """Several documents, each after a ``# Source:`` comment as ``helm template`` prints, for ``kubectl diff -f -``."""
    out = []
    for source, document in documents:
        out.append(f"---\n# Source: {source}\n{as_yaml(document)}")
    return "".join(out)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError("-o yaml needs PyYAML: pip install 'token-projector[review]'") from None
    return yaml
