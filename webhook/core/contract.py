"""The contract: what the webhook injects and refuses, as one frozen dataclass the core reads.

Every setting is a field with its default and its help text, defined once here (and, for the
server, in :mod:`webhook.server.settings`). From that one definition the command line
(:mod:`webhook.cli.options`) makes the flag (``--volume-name``), the environment variable
(``TOKEN_PROJECTOR_VOLUME_NAME``), ``--help`` and the README's settings table (a test keeps the
README in step). Nothing here parses flags or reads the environment: the core imports this module.

It also holds the one rule that says where each audience's token file is in a Pod that asks for
several audiences (:func:`audience_file_name`): the mutation writes the files by it, the annotation
parser refuses what it cannot place, and ``audience_token.TokenFile(audience=...)`` (which may not
import this package) implements the same rule, checked against the examples in
docs/multiple-audiences.md.
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
# A Pod asks for the verifying proxy (webhook.core.sidecar) with these three.
PROTECT_PORT_KEY = "protect-port"
PROTECT_AUDIENCE_KEY = "protect-audience"
PROTECT_ALLOW_KEY = "protect-allow"
PROTECT_KEYS = (PROTECT_PORT_KEY, PROTECT_AUDIENCE_KEY, PROTECT_ALLOW_KEY)
ANNOTATION_KEYS = (AUDIENCE_KEY, EXPIRATION_KEY, SKIP_CONTAINERS_KEY, *PROTECT_KEYS)
OPT_IN_KEYS = (AUDIENCE_KEY, *PROTECT_KEYS)
"""Any one of these makes the webhook act on a Pod: the registration's matchConditions send Pods that carry one."""

LegacyTokenPolicy = Literal["deny", "warn", "off"]
LegacyTokenScope = Literal["annotated", "all"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MAX_FILE_NAME_BYTES = 255
"""The kubelet's atomic writer refuses a longer file name in a projected volume (maxFileNameLength in
pkg/volume/util/atomic_writer.go); the API server does not check it, so the Pod would be stored and
then never start."""

_KEPT_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")
_DOT = ord(".")
_KEPT_AS_IS = re.compile(r"[a-z0-9_-]([a-z0-9._-]*[a-z0-9_-])?")
"""An audience that is its own file name: most are (``data-store``), and a regex says so at C speed."""


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
        "Prefix of the Pod annotations: PREFIX/audience (one audience or a comma-separated list) opts a Pod in, "
        "PREFIX/expiration-seconds and PREFIX/skip-containers tune it (the first two may be on its ServiceAccount).",
    )
    volume_name: str = setting("audience-token", "Name of the projected token volume added to the Pod.")
    mount_path: str = setting(
        "/var/run/secrets/token-projector.io/tokens",
        "Where the token volume is mounted, read-only, in each container: a directory of token-projector's own, "
        "which no other tool's token can be at (before 0.2.0 it was /var/run/secrets/tokens, the Kubernetes "
        "documentation's example path, where a Pod's own projected token then collided; set it to keep that path).",
    )
    token_file: str = setting("token", "File name of the token inside the mounted volume.")
    env_var: str = setting(
        "SERVICE_ACCOUNT_TOKEN_PATH",
        "Environment variable that holds the token file's full path (the first audience's, when there are several).",
    )
    dir_env_var: str = setting(
        "SERVICE_ACCOUNT_TOKEN_DIR",
        "Environment variable that holds the token directory (the mount path), set only in Pods with several "
        "audiences: each audience's token is there in a file named after it (docs/multiple-audiences.md).",
    )
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
    allowed_audiences: tuple[str, ...] = setting(
        (),
        "Glob patterns (comma-separated, case-sensitive) of the audiences a Pod may ask for; empty: any audience "
        "that is not denied. A typo such as data-stor is then refused at admission, not met as a 401 later.",
    )
    max_audiences: int = setting(
        8, "Most audiences one Pod may list: each one is a token the kubelet requests and rotates for the Pod."
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
    proxy_image: str = setting(
        "token-projector:0.2.0",
        "Image of the verifying proxy the webhook adds to a Pod annotated PREFIX/protect-port (docs/proxy.md): "
        "the webhook's own image, which carries the proxy command (the Helm chart passes the image it deploys).",
    )
    proxy_port: int = setting(
        8443, "Port the injected proxy listens on (its container port named token-proxy, which the Service targets)."
    )
    proxy_probe_port: int = setting(8444, "Port of the injected proxy's /healthz, /readyz and /metrics.")
    native_sidecars: bool = setting(
        True,
        "The cluster runs native sidecars (Kubernetes 1.29+): the proxy is added as one. false (older clusters, "
        "which would drop its restartPolicy: Always and never start the Pod): a Pod asking for it is refused.",
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
        if not _ENV_NAME.match(self.dir_env_var) or self.dir_env_var == self.env_var:
            bad_setting(
                "dir_env_var",
                self.dir_env_var,
                allowed=f"an environment variable name ([A-Za-z_][A-Za-z0-9_]*) other than env_var ({self.env_var})",
            )
        for name in ("proxy_port", "proxy_probe_port"):
            if not 1 <= getattr(self, name) <= 65535:
                bad_setting(name, getattr(self, name), allowed="a TCP port (1-65535)")
        if self.proxy_probe_port == self.proxy_port:
            bad_setting("proxy_probe_port", self.proxy_probe_port, allowed="a port other than proxy_port")
        if not self.proxy_image or self.proxy_image != self.proxy_image.strip() or " " in self.proxy_image:
            bad_setting("proxy_image", self.proxy_image, allowed="an image reference such as token-projector:0.2.0")
        if self.max_audiences < 1:
            bad_setting("max_audiences", self.max_audiences, allowed="a whole number of at least 1")
        if any(not pattern or "," in pattern for pattern in self.allowed_audiences):
            bad_setting("allowed_audiences", ",".join(self.allowed_audiences), allowed="non-empty glob patterns")
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

    @cached_property
    def token_dir(self) -> str:
        """The token directory inside each container (the mount path): the value of ``dir_env_var``."""
        return self.mount_path.rstrip("/")

    def audience_token_path(self, audience: str) -> str:
        """Where ``audience``'s token is inside each container of a Pod that asks for several audiences."""
        return f"{self.token_dir}/{audience_file_name(audience)}"

    def token_files(self, audiences: tuple[str, ...]) -> list[tuple[str, str]]:
        """The volume's token files for ``audiences`` (the Pod's order), as (audience, path in the volume).

        One audience: its token at ``token_file``, as it always was. Several: the first (the primary)
        at ``token_file`` too, where ``env_var`` points, and then every audience, the primary
        included, in the file named by :func:`audience_file_name`, so that each can be found from its
        audience alone. The primary's two files are two sources with equal audience, expiration and
        binding, which the kubelet serves from one cached token (docs/multiple-audiences.md).
        """
        primary = audiences[0]
        files = [(primary, self.token_file)]
        if len(audiences) > 1:
            for audience in audiences:
                name = audience_file_name(audience)
                if audience != primary or name != self.token_file:
                    files.append((audience, name))
        return files

    def colliding_files(self, files: list[tuple[str, str]]) -> tuple[tuple[str, str], tuple[str, str]] | None:
        """Two of ``files`` (as ``token_files`` gives them) that cannot both be written, or ``None``.

        Paths collide when they are equal ignoring case (a Windows node's file system ignores it),
        or when one is a directory of the other: ``token_file`` may have a directory part, and a file
        and a directory of one name cannot both exist, even for one audience's two files. The first
        file is ``token_file``; the others are names by the rule, which hold no ``/``.
        """
        primary = files[0]
        seen: dict[str, tuple[str, str]] = {}
        for file in files[1:]:
            folded = file[1].casefold()
            if (folded == self._token_file_folded and file[0] != primary[0]) or folded in self._token_file_dirs:
                return primary, file
            # By the rule, distinct audiences never share a name; this is the belt to its braces.
            other = seen.setdefault(folded, file)
            if other is not file:
                return other, file
        return None

    @cached_property
    def _token_file_folded(self) -> str:
        return posixpath.normpath(self.token_file).casefold()

    @cached_property
    def _token_file_dirs(self) -> frozenset[str]:
        parts = self._token_file_folded.split("/")
        return frozenset("/".join(parts[:i]) for i in range(1, len(parts)))


def audience_file_name(audience: str) -> str:
    """The file name of ``audience``'s token in a Pod with several audiences: the rule, defined once.

    Percent-encoding of the audience's UTF-8 bytes: lower-case ASCII letters, digits, ``-``, ``_``
    and ``.`` stay as they are; every other byte becomes ``%XX`` (upper-case hex), and so does a
    ``.`` that begins or ends the name. So ``data-store`` stays ``data-store`` and
    ``https://vault.example.com`` is ``https%3A%2F%2Fvault.example.com``. It is injective (percent-
    decoding gives the audience back), even on a case-insensitive file system (upper-case letters
    are encoded, and only hex digits are upper-case); a name never holds ``/``, never is ``.`` or
    ``..``, never starts with the kubelet's reserved ``..`` nor ends with a dot that Windows drops.
    """
    if _KEPT_AS_IS.fullmatch(audience):
        return audience
    data = audience.encode("utf-8", "surrogatepass")
    last = len(data) - 1
    return "".join(
        chr(byte) if byte in _KEPT_BYTES and not (byte == _DOT and (i == 0 or i == last)) else f"%{byte:02X}"
        for i, byte in enumerate(data)
    )
