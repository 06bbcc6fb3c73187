"""How ``token-projector serve`` listens, reloads its certificate and shuts down: ``ServerSettings``.

Defined the same way as the contract (:func:`webhook.core.contract.setting`), so the command line
makes its flags, environment variables, ``--help`` and README table from these fields too.
"""

from dataclasses import dataclass

from webhook.core.contract import bad_setting, flag_of, setting
from webhook.core.kubernetes import SERVICE_ACCOUNT_MOUNT_PATH


def check_ports(port: int, probe_port: int) -> None:
    """The settings ``port`` (1-65535) and ``probe_port`` (0 for off, else another port): a ConfigError naming
    the setting otherwise. One rule for every server the command line starts (``serve``, ``proxy``)."""
    for name, value in (("port", port), ("probe_port", probe_port)):
        if not 0 <= value <= 65535 or (name == "port" and value == 0):
            bad_setting(
                name, value, allowed="a TCP port (1-65535" + (", or 0 for off)" if name == "probe_port" else ")")
            )
    if probe_port == port:
        bad_setting("probe_port", probe_port, allowed=f"a port other than {flag_of('port')}")


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
    service_account_opt_in: bool = setting(
        False,
        "Serve POST /mutate/service-accounts, where PREFIX/audience and PREFIX/expiration-seconds on a Pod's "
        "ServiceAccount apply to the Pod (the Pod's own win): ServiceAccounts are read from a list-and-watch "
        "cache (needs get, list, watch on serviceaccounts; docs/serviceaccount-opt-in.md).",
    )
    kube_api_url: str = setting(
        "https://kubernetes.default.svc", "The Kubernetes API server the ServiceAccount cache reads from."
    )
    kube_token_file: str = setting(
        f"{SERVICE_ACCOUNT_MOUNT_PATH}/token",
        "Bearer token file for that API server (re-read when it changes: the kubelet rotates it; "
        "a bad read keeps the last good token).",
    )
    kube_ca_file: str = setting(
        f"{SERVICE_ACCOUNT_MOUNT_PATH}/ca.crt", "CA bundle that signed the API server's certificate."
    )
    service_account_lookup_seconds: float = setting(
        2.0,
        "A Pod whose ServiceAccount is not cached yet (created in the same apply) waits this long for a direct "
        "GET of it; after that, or on an error, the Pod is refused, saying so (fail closed).",
    )

    def __post_init__(self) -> None:
        check_ports(self.port, self.probe_port)
        if self.max_body_bytes < 1024:
            bad_setting("max_body_bytes", self.max_body_bytes, allowed="at least 1024")
        if not self.kube_api_url.startswith("https://"):
            bad_setting("kube_api_url", self.kube_api_url, allowed="an https:// URL")
        for name in (
            "read_timeout_seconds",
            "keepalive_timeout_seconds",
            "cert_reload_seconds",
            "service_account_lookup_seconds",
        ):
            if getattr(self, name) <= 0:
                bad_setting(name, getattr(self, name), allowed="a positive number")
        for name in ("drain_seconds", "shutdown_timeout_seconds"):
            if getattr(self, name) < 0:
                bad_setting(name, getattr(self, name), allowed="zero or more")
        if self.log_level not in ("debug", "info", "warning", "error"):
            bad_setting("log_level", self.log_level, allowed="debug, info, warning or error")
