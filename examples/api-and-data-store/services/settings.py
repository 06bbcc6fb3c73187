"""The two services' settings, and the one place that turns environment variables into them.

Each service's ``main`` passes ``os.environ`` to ``from_environ``; nothing else in the package reads
the environment. A variable that is set but unusable is an error naming the variable, the value and
what to write (``SettingsError``, exit status 2), never a default applied in silence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from yarl import URL

TOKEN_PATH_VAR: Final = "SERVICE_ACCOUNT_TOKEN_PATH"
"""The variable token-projector sets in every container of a Pod annotated token-projector.io/audience."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_SHOWN: Final = 80


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use; the message says what to write."""


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What the api needs: where to listen, where the data store is, and its token file."""

    address: str = "0.0.0.0"
    port: int = 8080
    data_store_url: str = "http://data-store.data-store.svc.cluster.local"
    token_path: str
    """The projected token file; token-projector names it in ``SERVICE_ACCOUNT_TOKEN_PATH``."""
    token_refresh_seconds: float = 1.0
    """How often the api looks at its token file for a token the kubelet rotated (and logs one it finds)."""
    timeout_seconds: float = 5.0
    """For one call to the data store, connecting included."""
    log_level: str = "info"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ApiSettings:
        token_path = environ.get(TOKEN_PATH_VAR, "").strip()
        if not token_path:
            raise SettingsError(
                f"{TOKEN_PATH_VAR} is not set: token-projector sets it in the containers of Pods annotated "
                "'token-projector.io/audience: data-store'. Is the api's Pod annotated, and was it created after "
                "the webhook was installed? Outside a cluster, set it to a token file."
            )
        return cls(
            address=_text(environ, "ADDRESS", cls.address),
            port=_port(environ, "PORT", cls.port),
            data_store_url=_url(environ, "DATA_STORE_URL", cls.data_store_url),
            token_path=token_path,
            token_refresh_seconds=_seconds(environ, "TOKEN_REFRESH_SECONDS", cls.token_refresh_seconds),
            timeout_seconds=_seconds(environ, "DATA_STORE_TIMEOUT_SECONDS", cls.timeout_seconds),
            log_level=_log_level(environ, cls.log_level),
        )


@dataclass(frozen=True, kw_only=True)
class DataStoreSettings:
    """What the data store needs: where to listen, its audience, whom it lets in, how it reaches the API."""

    address: str = "0.0.0.0"
    port: int = 8081
    audience: str = "data-store"
    allow: tuple[str, ...] = ("api/api",)
    """NAMESPACE/SERVICEACCOUNT patterns; audience_token checks each one when the reviewer is built."""
    kubeconfig: str | None = None
    """None: the Pod's own service account (in-cluster), the way the data store runs in a cluster."""
    cache_seconds: float = 10.0
    """How long a verdict is kept (acceptances and refusals alike): a revoked token works this long."""
    review_timeout_seconds: float = 5.0
    log_level: str = "info"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DataStoreSettings:
        kubeconfig = environ.get("KUBECONFIG", "").strip() or None
        if kubeconfig is not None and ":" in kubeconfig:
            raise SettingsError(
                f"KUBECONFIG={_shown(kubeconfig)} names several files; the data store reads one kubeconfig: "
                "set KUBECONFIG to a single path (or leave it unset in a Pod, for in-cluster credentials)"
            )
        return cls(
            address=_text(environ, "ADDRESS", cls.address),
            port=_port(environ, "PORT", cls.port),
            audience=_text(environ, "AUDIENCE", cls.audience),
            allow=_allow(environ, cls.allow),
            kubeconfig=kubeconfig,
            cache_seconds=_seconds(environ, "REVIEW_CACHE_SECONDS", cls.cache_seconds, zero=True),
            review_timeout_seconds=_seconds(environ, "REVIEW_TIMEOUT_SECONDS", cls.review_timeout_seconds),
            log_level=_log_level(environ, cls.log_level),
        )


def _shown(value: str) -> str:
    return repr(value) if len(value) <= _SHOWN else f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def _text(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name)
    if value is None:
        return default
    if not value.strip() or value != value.strip():
        raise SettingsError(f"{name}={_shown(value)}: write a value without surrounding spaces, or unset {name}")
    return value


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SettingsError(f"{name}={_shown(value)}: write a TCP port number from 1 to 65535")
    return int(value)


def _seconds(environ: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    value = environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        least = "zero or more" if zero else "more than zero"
        raise SettingsError(f"{name}={_shown(value)}: write a number of seconds, {least}, such as 10 or 0.5")
    return seconds


def _url(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name)
    if value is None:
        return default
    try:
        url = URL(value)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host or url.user or url.query_string or url.fragment:
        raise SettingsError(
            f"{name}={_shown(value)}: write the data store's base URL, http(s)://HOST[:PORT][/PATH], "
            "such as http://data-store.data-store.svc.cluster.local"
        )
    return value.rstrip("/")


def _allow(environ: Mapping[str, str], default: tuple[str, ...]) -> tuple[str, ...]:
    value = environ.get("ALLOW")
    if value is None:
        return default
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    if not patterns:
        raise SettingsError(
            f"ALLOW={_shown(value)}: list the callers to accept as NAMESPACE/SERVICEACCOUNT, comma-separated, "
            "such as api/api"
        )
    return patterns


def _log_level(environ: Mapping[str, str], default: str) -> str:
    value = environ.get("LOG_LEVEL")
    if value is None:
        return default
    if value.lower() not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL={_shown(value)}: write one of {', '.join(LOG_LEVELS)}")
    return value.lower()
