"""The contract: what the webhook injects and refuses, as one frozen dataclass the core reads.

Every setting is a field with its default and its help text, defined once here (and, for the
server, in :mod:`webhook.server.settings`). From that one definition the command line
(:mod:`webhook.cli.options`) makes the flag (``--volume-name``), the environment variable
(``TOKEN_PROJECTOR_VOLUME_NAME``), ``--help`` and the README's settings table (a test keeps the
README in step). Nothing here parses flags or reads the environment: the core imports this module.
"""

import posixpath
import re
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from webhook.core.kubernetes import MAX_EXPIRATION_SECONDS_LIMIT, MIN_EXPIRATION_SECONDS
from webhook.errors import ConfigError

ENV_PREFIX = "TOKEN_PROJECTOR_"

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


def flag_of(name: str) -> str:
    """The command-line flag of setting ``name``."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of setting ``name``."""
    return ENV_PREFIX + name.upper()


def bad_setting(name: str, value: object, *, allowed: str) -> typing.NoReturn:
    """Refuse a setting's value, naming the flag and the variable a person would change."""
    raise ConfigError(f"{flag_of(name)} / {env_of(name)}: {value!r} is not valid; it must be {allowed}")


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
            bad_setting(
                "annotation_prefix", self.annotation_prefix, allowed="a DNS subdomain such as token-projector.io"
            )
        if not _DNS_LABEL.match(self.volume_name):
            bad_setting(
                "volume_name", self.volume_name, allowed="a DNS label (lower-case letters, digits, '-', at most 63)"
            )
        if not self.mount_path.startswith("/") or ":" in self.mount_path or self.mount_path.rstrip("/") == "":
            bad_setting("mount_path", self.mount_path, allowed="an absolute path other than / without ':'")
        if not self.token_file or self.token_file.startswith("/") or ".." in self.token_file.split("/"):
            bad_setting("token_file", self.token_file, allowed="a relative path without '..'")
        if not _ENV_NAME.match(self.env_var):
            bad_setting("env_var", self.env_var, allowed="an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if not MIN_EXPIRATION_SECONDS <= self.max_expiration_seconds <= MAX_EXPIRATION_SECONDS_LIMIT:
            bad_setting(
                "max_expiration_seconds",
                self.max_expiration_seconds,
                allowed=f"between {MIN_EXPIRATION_SECONDS} and {MAX_EXPIRATION_SECONDS_LIMIT}",
            )
        if not MIN_EXPIRATION_SECONDS <= self.default_expiration_seconds <= self.max_expiration_seconds:
            bad_setting(
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
