"""Settings: every name and default token-projector uses, defined once, read once at start-up.

Each setting is a field of a frozen dataclass with its default and its help text. From that one
definition come the command-line flag (``--volume-name``), the environment variable
(``TOKEN_PROJECTOR_VOLUME_NAME``), ``--help`` and the README's settings table (a test keeps the
README in step). A flag beats the environment, which beats the default. This is the only module
that reads ``os.environ``.
"""

import argparse
import dataclasses
import os
import posixpath
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar

from webhook.errors import ConfigError

ENV_PREFIX = "TOKEN_PROJECTOR_"

# Fixed by Kubernetes, not by us, so not settings.
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where the kubelet mounts the API token (legacy Secret or kube-api-access) in every container."""
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
"""Marks a static Pod's mirror; the API server forbids mirror Pods any service account token."""
MIN_EXPIRATION_SECONDS = 600
"""The API server rejects a serviceAccountToken projection with expirationSeconds below this."""
MAX_EXPIRATION_SECONDS_LIMIT = 2**32
"""The API server rejects a serviceAccountToken projection with expirationSeconds above this."""

# The annotation names under the prefix: a Pod opts in with PREFIX/audience.
AUDIENCE_KEY = "audience"
EXPIRATION_KEY = "expiration-seconds"
SKIP_CONTAINERS_KEY = "skip-containers"
ANNOTATION_KEYS = (AUDIENCE_KEY, EXPIRATION_KEY, SKIP_CONTAINERS_KEY)

LegacyTokenPolicy = Literal["deny", "warn", "off"]
LegacyTokenScope = Literal["annotated", "all"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def setting(default: Any, help: str) -> Any:
    """A dataclass field that is also a flag and an environment variable, documented by ``help``."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class Contract:
    """What the webhook injects and what it refuses: everything the pure core needs."""

    annotation_prefix: str = setting(
        "token-projector.io",
        "Prefix of the Pod annotations: PREFIX/audience opts a Pod in, "
        "PREFIX/expiration-seconds and PREFIX/skip-containers tune it.",
    )
    volume_name: str = setting("audience-token", "Name of the projected token volume added to the Pod.")
    mount_path: str = setting(
        "/var/run/secrets/tokens", "Where the token volume is mounted, read-only, in each container."
    )
    token_file: str = setting("token", "File name of the token inside the mounted volume.")
    env_var: str = setting("SERVICE_ACCOUNT_TOKEN_PATH", "Environment variable that holds the token file's full path.")
    default_expiration_seconds: int = setting(
        3600, "Token lifetime when the Pod does not set PREFIX/expiration-seconds."
    )
    max_expiration_seconds: int = setting(
        86400,
        "Largest lifetime a Pod may ask for. Short-lived tokens limit what a leaked token is worth; "
        "the kubelet refreshes them at 80% of their life.",
    )
    denied_audiences: tuple[str, ...] = setting(
        (
            "https://kubernetes.default.svc",
            "https://kubernetes.default.svc.cluster.local",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        "Audiences a Pod may not ask for (comma-separated): the API server's own, because a token "
        "for them is a Kubernetes API credential, which is not what this webhook hands out.",
    )
    legacy_token_policy: LegacyTokenPolicy = setting(
        "deny",
        "What to do with a Pod that carries a legacy (Secret-backed, never-expiring) service "
        "account token: deny it, warn (allow with a warning), or off.",
    )
    legacy_token_scope: LegacyTokenScope = setting(
        "annotated",
        "Which Pods the legacy-token policy applies to: annotated (those that opt in) or all "
        "(every Pod the webhook sees; widen the webhook's matchConditions to match).",
    )
    strict: bool = setting(
        False,
        "Also deny annotated Pods that still automount the Kubernetes API token "
        "(kube-api-access-* volume): they asked for an audience token and need no API credential.",
    )

    def __post_init__(self) -> None:
        if not _DNS_SUBDOMAIN.match(self.annotation_prefix):
            _bad("annotation_prefix", self.annotation_prefix, allowed="a DNS subdomain such as token-projector.io")
        if not _DNS_LABEL.match(self.volume_name):
            _bad("volume_name", self.volume_name, allowed="a DNS label (lower-case letters, digits, '-', at most 63)")
        if not self.mount_path.startswith("/") or ":" in self.mount_path or self.mount_path.rstrip("/") == "":
            _bad("mount_path", self.mount_path, allowed="an absolute path other than / without ':'")
        if not self.token_file or self.token_file.startswith("/") or ".." in self.token_file.split("/"):
            _bad("token_file", self.token_file, allowed="a relative path without '..'")
        if not _ENV_NAME.match(self.env_var):
            _bad("env_var", self.env_var, allowed="an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if not MIN_EXPIRATION_SECONDS <= self.max_expiration_seconds <= MAX_EXPIRATION_SECONDS_LIMIT:
            _bad(
                "max_expiration_seconds",
                self.max_expiration_seconds,
                allowed=f"between {MIN_EXPIRATION_SECONDS} and {MAX_EXPIRATION_SECONDS_LIMIT}",
            )
        if not MIN_EXPIRATION_SECONDS <= self.default_expiration_seconds <= self.max_expiration_seconds:
            _bad(
                "default_expiration_seconds",
                self.default_expiration_seconds,
                allowed=f"between {MIN_EXPIRATION_SECONDS} and max_expiration_seconds ({self.max_expiration_seconds})",
            )

    # Derived names are computed once per Contract, not once per Pod (cached_property writes the
    # instance's __dict__ directly, so it works on a frozen dataclass).
    @cached_property
    def annotation_names(self) -> dict[str, str]:
        """The full annotation name of each of ``ANNOTATION_KEYS``."""
        return {key: f"{self.annotation_prefix}/{key}" for key in ANNOTATION_KEYS}

    @cached_property
    def known_annotations(self) -> frozenset[str]:
        return frozenset(self.annotation_names.values())

    def annotation(self, key: str) -> str:
        """The full annotation name for ``key`` (one of ``ANNOTATION_KEYS``)."""
        return self.annotation_names[key]

    @cached_property
    def token_path(self) -> str:
        """The token file's path inside each container: the env var's value."""
        return posixpath.join(self.mount_path, self.token_file)


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How ``token-projector serve`` listens, reloads its certificate and shuts down."""

    address: str = setting("0.0.0.0", "Address the HTTPS admission server listens on.")
    port: int = setting(8443, "Port of the HTTPS admission server (POST /mutate, GET /healthz, /readyz).")
    cert_file: str = setting("certs/tls.crt", "PEM certificate chain the server presents; reloaded when it changes.")
    key_file: str = setting("certs/tls.key", "PEM private key of that certificate; reloaded when it changes.")
    probe_port: int = setting(
        8080, "Plain-HTTP port for /healthz, /readyz and /metrics (never /mutate); 0 turns it off."
    )
    max_body_bytes: int = setting(
        6 * 1024 * 1024,
        "Largest AdmissionReview body accepted (HTTP 413 above it): above the API server's own "
        "3 MiB request limit for the object and its old version, so no real review is refused.",
    )
    read_timeout_seconds: float = setting(
        10.0,
        "Time a client has to send the whole request body (HTTP 408 after it), so slow clients cannot hold a slot.",
    )
    keepalive_timeout_seconds: float = setting(
        95.0,
        "A connection must send a complete request within this time of opening or of its last answer, "
        "else it is closed: the deadline for slow headers and idle connections. Above the API server "
        "client's 90 s idle timeout, so the client, not the server, closes idle connections (a POST on "
        "a connection the server just closed is not retried).",
    )
    drain_seconds: float = setting(
        5.0,
        "After SIGTERM: seconds the server keeps answering with /readyz failing, so that Service "
        "endpoints drop it before it stops listening.",
    )
    shutdown_timeout_seconds: float = setting(
        10.0, "After the drain: how long requests in flight may take to finish before the process exits."
    )
    cert_reload_seconds: float = setting(2.0, "How often the certificate and key files are checked for changes.")
    log_level: str = setting("info", "Log level: debug, info, warning or error.")

    def __post_init__(self) -> None:
        for name in ("port", "probe_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535 or (name == "port" and value == 0):
                _bad(name, value, allowed="a TCP port (1-65535" + (", or 0 for off)" if name == "probe_port" else ")"))
        if self.probe_port == self.port:
            _bad("probe_port", self.probe_port, allowed="a port other than the HTTPS port")
        if self.max_body_bytes < 1024:
            _bad("max_body_bytes", self.max_body_bytes, allowed="at least 1024")
        for name in ("read_timeout_seconds", "keepalive_timeout_seconds", "cert_reload_seconds"):
            if getattr(self, name) <= 0:
                _bad(name, getattr(self, name), allowed="a positive number")
        for name in ("drain_seconds", "shutdown_timeout_seconds"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), allowed="zero or more")
        if self.log_level not in ("debug", "info", "warning", "error"):
            _bad("log_level", self.log_level, allowed="debug, info, warning or error")


def _bad(name: str, value: object, *, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{flag_of(name)} / {env_of(name)}: {value!r} is not valid; it must be {allowed}")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


S = TypeVar("S", Contract, ServerSettings)


def add_arguments(parser: argparse.ArgumentParser, cls: type[Contract] | type[ServerSettings]) -> None:
    """Add one flag per field of ``cls``; its help shows the default and the environment variable."""
    group = parser.add_argument_group(f"{cls.__name__} settings", cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
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
        _bad(name, raw, allowed=f"a {'boolean (true/false)' if kind is bool else kind.__name__}")
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if typing.get_origin(kind) is Literal and raw not in typing.get_args(kind):
        _bad(name, raw, allowed="one of " + ", ".join(typing.get_args(kind)))
    return raw


def settings_table(cls: type[Contract] | type[ServerSettings]) -> str:
    """The Markdown table of ``cls``'s settings, as the README shows it."""
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        if isinstance(shown, bool):
            shown = str(shown).lower()
        rows.append(f"| `{flag_of(f.name)}` | `{env_of(f.name)}` | `{shown}` | {f.metadata['help']} |")
    return "\n".join(rows)
