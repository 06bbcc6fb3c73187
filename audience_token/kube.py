"""The verifier's own way to the Kubernetes API: its credentials, and the one transport to it (KubeApi).

A TokenReviewer needs exactly one API call, ``POST /apis/authentication.k8s.io/v1/tokenreviews``, so it
speaks HTTP to the API server itself rather than pull in a generated client. Credentials come from the
Pod it runs in (the default: its service account token, re-read as the kubelet rotates it, the cluster
CA, ``KUBERNETES_SERVICE_HOST/PORT``) or, for development and tests, from a kubeconfig with a token or a
client certificate. Every failure to get an answer is a ``ReviewUnavailable`` that names the server and
what went wrong; none carries the request, whose headers hold the verifier's own token.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from audience_token.errors import ConfigError, ReviewUnavailable
from audience_token.token_read import RotatingToken

log = logging.getLogger("audience_token")

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN: Final = SERVICE_ACCOUNT_DIR / "token"
IN_CLUSTER_CA: Final = SERVICE_ACCOUNT_DIR / "ca.crt"
TOKEN_REREAD_SECONDS: Final = 60.0
"""client-go re-reads its token file every minute; the kubelet rotates at 80% of the token's life."""
MAX_ANSWER_BYTES: Final = 1024 * 1024
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def may_carry_a_token(url: str) -> bool:
    """Whether a request to ``url`` may carry a token: https, or plain http to loopback only (where no
    token crosses a network). The one rule for the API server's URL and the outbound proxy's target."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced '[' in the host, for one
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how the verifier proves who it is. Secrets are left out of ``repr``."""

    server: str
    source: str
    """Where these came from, for messages: ``in-cluster`` or ``kubeconfig PATH (user NAME)``."""
    ca_file: str | None = None
    ca_data: str | None = field(default=None, repr=False)
    tls_server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # One rule for every request made with these credentials (the TokenReview and the offline
        # verifier's key fetch alike): they carry the verifier's own token, which never crosses a
        # network in the clear.
        if not isinstance(self.server, str) or not may_carry_a_token(self.server):
            raise ConfigError(
                f"the API server of {self.source} must be an https:// URL, not {self.server!r} "
                "(plain http is accepted for a loopback address only, where no token crosses a network)"
            )

    @classmethod
    def in_cluster(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        token_file: str | Path = IN_CLUSTER_TOKEN,
        ca_file: str | Path = IN_CLUSTER_CA,
    ) -> Credentials:
        """The Pod's own service account, as client-go's ``InClusterConfig`` finds it (``environ``: os.environ)."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise ConfigError(
                "not running in a Kubernetes Pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset; "
                "pass kubeconfig=PATH (or credentials=...) to use a kubeconfig during development"
            )
        for what, path in (("token", token_file), ("CA certificate", ca_file)):
            if not Path(path).is_file():
                raise ConfigError(
                    f"the Pod's service account {what} {str(path)!r} is missing: is automountServiceAccountToken "
                    "disabled for this Pod or its ServiceAccount? The reviewer needs its own token"
                )
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(server=server, source="in-cluster", ca_file=str(ca_file), token_file=str(token_file))

    @classmethod
    def from_kubeconfig(cls, path: str | Path, *, context: str | None = None) -> Credentials:
        """The cluster and user of ``context`` (default: current-context) in a JSON or YAML kubeconfig."""
        return _from_kubeconfig(Path(path), context=context)

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only the cluster CA (or the system roots if none is given)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"the cluster CA of {self.source} cannot be loaded: {error}") from None
        if self.client_cert_file or self.client_cert_data:
            _load_client_certificate(context, self)
        return context


def _load_client_certificate(context: ssl.SSLContext, credentials: Credentials) -> None:
    # ssl can only load a certificate chain from files: data from a kubeconfig goes through a private
    # directory that exists only while it is loaded.
    with tempfile.TemporaryDirectory(prefix="audience-token-") as folder:
        cert, key = credentials.client_cert_file, credentials.client_key_file
        if credentials.client_cert_data is not None:
            cert = os.path.join(folder, "client.crt")
            Path(cert).write_bytes(credentials.client_cert_data)
        if credentials.client_key_data is not None:
            key = os.path.join(folder, "client.key")
            descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(credentials.client_key_data)
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"the client certificate of {credentials.source} cannot be loaded: {error}") from None


class BearerToken:
    """The verifier's own token: fixed, or the current one of a file the kubelet rotates (re-read when it
    changes, at least every minute as client-go does, and after a 401)."""

    def __init__(self, *, token: str | None = None, path: str | None = None) -> None:
        self._fixed = token
        self._file = (
            RotatingToken(
                Path(path),
                describe="the reviewer's own token",
                missing=lambda why: ReviewUnavailable(
                    f"the reviewer's own token {path!r} cannot be read: {why}", cause="own_token"
                ),
                max_age=TOKEN_REREAD_SECONDS,
                check_every=0.0,  # a stat per TokenReview: nothing next to the review itself
                log=log,
            )
            if path is not None
            else None
        )

    def invalidate(self) -> None:
        """Read the file again on next use (after the API server said 401)."""
        if self._file is not None:
            self._file.invalidate()

    def get(self) -> str | None:
        return self._fixed if self._file is None else self._file.read()


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: Any
    """The parsed JSON body, or None when it is not JSON."""


class KubeApi:
    """The one HTTP transport to the API server (or, offline, to a public issuer): one connection pool,
    made on first use inside the running event loop.

    Every request carries the verifier's own token (when there are credentials), goes only where it
    is sent (redirects are never followed: a 3xx is handed back as it is), reads at most
    :data:`MAX_ANSWER_BYTES`, and fails as a ``ReviewUnavailable`` that names the server and what went
    wrong, never chained to aiohttp's exception (which may hold the request, and so our token).
    ``credentials=None`` is for an issuer's public endpoints: system trust roots, no token.
    """

    def __init__(self, credentials: Credentials | None, *, timeout: float, connections: int) -> None:
        self.credentials = credentials
        if credentials is None:
            self._ssl: ssl.SSLContext | None = ssl.create_default_context()
        else:
            self._ssl = credentials.ssl_context() if urlsplit(credentials.server).scheme == "https" else None
        self._bearer = BearerToken(token=credentials.token, path=credentials.token_file) if credentials else None
        self._server_hostname = credentials.tls_server_name if credentials else None
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=timeout)
        self._seconds = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl or False)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False, trust_env=False
            )
        return self._session

    def token_changed_since_401(self) -> None:
        if self._bearer is not None:
            self._bearer.invalidate()

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Answer:
        """POST ``body`` as JSON to ``path`` on the API server."""
        assert self.credentials is not None, "a POST goes to the API server of the credentials"
        server = self.credentials.server
        return await self._send(
            "POST", server + path, json.dumps(body), "application/json", f"the API server at {server}"
        )

    async def get_json(self, url: str, *, accept: str = "application/json") -> Answer:
        """GET ``url`` (the API server's, or a public issuer's); failures name ``url``."""
        return await self._send("GET", url, None, accept, url)

    async def _send(self, method: str, url: str, data: str | None, accept: str, where: str) -> Answer:
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = "application/json"
        token = self._bearer.get() if self._bearer is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        failure, cause = "", ""
        # The ReviewUnavailable is raised after the except blocks, so that it carries no __context__:
        # aiohttp's exceptions may hold the request, and the request holds our own token.
        try:
            async with self._get_session().request(
                method,
                url,
                data=data,
                headers=headers,
                server_hostname=self._server_hostname,
                allow_redirects=False,
            ) as response:
                raw = await _read_bounded(response, where)
                retry_after = response.headers.get("Retry-After")
                status = response.status
        except TimeoutError:
            failure, cause = f"{where} did not answer within {self._seconds:g} s", "timeout"
        except aiohttp.ClientConnectorCertificateError as error:
            trusted = f"the cluster CA of {self.credentials.source}" if self.credentials else "the system's roots"
            failure = f"{where} presented a certificate {trusted} does not trust: {error.certificate_error}"
            cause = "certificate"
        except (aiohttp.ClientError, OSError) as error:
            failure, cause = f"{where} could not be reached: {_describe(error)}", "connection"
        if failure:
            raise ReviewUnavailable(failure, cause=cause)
        try:
            parsed = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            parsed = None
        return Answer(status=status, retry_after=retry_after, body=parsed)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_bounded(response: aiohttp.ClientResponse, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ReviewUnavailable(f"{where} sent an answer over {MAX_ANSWER_BYTES} bytes", cause="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: BaseException) -> str:
    # aiohttp's messages name host and port but not headers; the class name says what kind of failure.
    text = str(error) or "no detail"
    return f"{type(error).__name__}: {text[:300]}"


def decode_base64(value: object, *, what: str, source: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: {what} is not valid base64") from None


def _load_kubeconfig(path: Path) -> dict[str, Any]:
    """JSON needs nothing; YAML needs PyYAML (the ``kubeconfig`` extra), asked for by name if missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"the kubeconfig {str(path)!r} cannot be read: {error}") from None
    try:
        document: object = json.loads(text)
    except ValueError:
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"the kubeconfig {str(path)!r} is YAML, which needs PyYAML: pip install 'audience-token[kubeconfig]', "
                "or convert it with: kubectl config view --raw --minify -o json > kubeconfig.json"
            ) from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"the kubeconfig {str(path)!r} is neither JSON nor YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"the kubeconfig {str(path)!r} is not a mapping with clusters, users and contexts")
    return document


def _named(document: dict[str, Any], kind: str, name: object, *, source: str) -> dict[str, Any]:
    entries = document.get(kind + "s")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(kind), dict):
            found: dict[str, Any] = entry[kind]
            return found
    raise ConfigError(f"{source}: no {kind} named {name!r}")


def _from_kubeconfig(path: Path, *, context: str | None) -> Credentials:
    document = _load_kubeconfig(path)
    source = f"kubeconfig {str(path)!r}"
    name = context if context is not None else document.get("current-context")
    if not name:
        raise ConfigError(f"{source} has no current-context: pass context=NAME")
    chosen = _named(document, "context", name, source=source)
    cluster = _named(document, "cluster", chosen.get("cluster"), source=source)
    user_name = chosen.get("user")
    user = _named(document, "user", user_name, source=source)
    source = f"kubeconfig {str(path)!r} (context {name!r}, user {user_name!r})"

    def relative(value: object) -> str | None:
        # kubectl resolves file references relative to the kubeconfig's own folder.
        return str(path.parent / value) if isinstance(value, str) and value else None

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise ConfigError(f"{source}: the cluster's server must be an https:// URL, not {server!r}")
    if cluster.get("insecure-skip-tls-verify"):
        raise ConfigError(f"{source}: insecure-skip-tls-verify is refused; a token review needs a verified server")
    unsupported = sorted(k for k in ("exec", "auth-provider", "username", "password") if k in user)
    if unsupported:
        raise ConfigError(
            f"{source}: user authentication by {', '.join(unsupported)} is not supported; "
            "use a token, tokenFile or client-certificate user"
        )
    ca_data = cluster.get("certificate-authority-data")
    credentials = Credentials(
        server=server.rstrip("/"),
        source=source,
        ca_file=relative(cluster.get("certificate-authority")),
        ca_data=decode_base64(ca_data, what="certificate-authority-data", source=source).decode("ascii", "replace")
        if ca_data is not None
        else None,
        tls_server_name=cluster.get("tls-server-name") or None,
        token=user.get("token") or None,
        token_file=relative(user.get("tokenFile")),
        client_cert_file=relative(user.get("client-certificate")),
        client_key_file=relative(user.get("client-key")),
        client_cert_data=_optional_data(user, "client-certificate-data", source=source),
        client_key_data=_optional_data(user, "client-key-data", source=source),
    )
    has_cert = credentials.client_cert_file or credentials.client_cert_data
    has_key = credentials.client_key_file or credentials.client_key_data
    if bool(has_cert) != bool(has_key):
        raise ConfigError(f"{source}: a client certificate needs its key and the key its certificate")
    if not (credentials.token or credentials.token_file or has_cert):
        raise ConfigError(f"{source}: the user has no token, tokenFile or client certificate")
    return credentials


def _optional_data(user: dict[str, Any], key: str, *, source: str) -> bytes | None:
    value = user.get(key)
    return None if value is None else decode_base64(value, what=key, source=source)
