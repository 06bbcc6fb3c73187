"""The cluster's service account signing keys, fetched from its issuer discovery and kept fresh.

kube-apiserver publishes ``/.well-known/openid-configuration`` (the ``issuer`` and a ``jwks_uri``) and
its public keys at ``/openid/v1/jwks``. The issuer's URL is often not reachable from where a receiver
runs (an internal name, or a bucket outside), and kube-apiserver serves both documents itself. So with
credentials (in-cluster, a kubeconfig) both are fetched *from the API server*, whatever ``jwks_uri``
says; with an issuer URL alone they are fetched from there over public TLS.

Fetching is bounded: once on first use, again every ``refresh_every`` seconds (a key the cluster
stops publishing stops working), and on a token naming an unknown ``kid`` (a new key) but at most once
per ``min_refresh_interval``, so tokens with made-up key ids cannot turn into load on the API server.
The periodic refresh runs in the background while the current keys answer; only a caller with no keys
yet, or with an unknown ``kid``, waits for a fetch. A failed refresh keeps the last keys. Only
``OfflineVerifier`` uses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from audience_token.errors import ConfigError, ReviewUnavailable, log_defect
from audience_token.kube import Credentials, KubeApi

if TYPE_CHECKING:
    import jwt

log = logging.getLogger("audience_token")

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
JWKS_PATH: Final = "/openid/v1/jwks"
"""Where kube-apiserver serves its keys, whatever ``jwks_uri`` (``--service-account-jwks-uri``) says."""
DISCOVERY_ROLE: Final = "system:service-account-issuer-discovery"
EXTRA: Final = "pip install 'audience-token[offline]'"
ALGORITHMS: Final = frozenset({"RS256", "ES256", "ES384", "ES512"})
"""What kube-apiserver signs service account tokens with (RSA or ECDSA keys); never HMAC or ``none``."""
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
JWKS_MEDIA_TYPE: Final = "application/jwk-set+json"
"""kube-apiserver serves the keys as this and answers 406 to ``Accept: application/json`` alone."""


def import_jwt() -> Any:
    """PyJWT with its cryptography backend, or a ConfigError naming the extra to install."""
    try:
        import jwt
        from jwt.algorithms import has_crypto
    except ImportError:
        raise ConfigError(f"OfflineVerifier needs PyJWT with cryptography: {EXTRA}") from None
    if not has_crypto:
        raise ConfigError(f"OfflineVerifier needs PyJWT's cryptography support: {EXTRA}")
    return jwt


@dataclass(frozen=True)
class KeySet:
    """The issuer and its signing keys by ``kid``, as fetched at ``fetched_at`` (monotonic seconds)."""

    issuer: str
    keys: Mapping[str, jwt.PyJWK]
    fetched_at: float


class KeySource:
    """Fetches and refreshes one cluster's key set, through the one transport (``kube.KubeApi``)."""

    def __init__(
        self,
        *,
        credentials: Credentials | None,
        issuer: str | None,
        refresh_every: float,
        min_refresh_interval: float,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.jwt: Any = import_jwt()
        """The PyJWT module, imported here so that a missing extra is one clear error at construction."""
        self._credentials = credentials
        self._issuer = issuer
        self._refresh_every = refresh_every
        self._min_interval = min_refresh_interval
        self._timeout = timeout
        self._clock = clock
        # The one transport to the API server (or the issuer), made here: loading the CA (or the system
        # roots) is slow and can fail, better at start-up.
        self._api = KubeApi(credentials, timeout=timeout, connections=2)
        self._keyset: KeySet | None = None
        self._tried_at = float("-inf")
        self._last_error = ""
        self._lock = asyncio.Lock()
        self._background: asyncio.Future[KeySet] | None = None
        self.fetches = 0
        """Fetches so far (the discovery document and the key set count as one)."""

    @property
    def source(self) -> str:
        """Where the keys come from, for messages."""
        if self._credentials is not None:
            return f"the API server at {self._credentials.server} ({self._credentials.source})"
        return f"the issuer {self._issuer}"

    async def keys(self, kid: str | None) -> KeySet:
        """The key set: fetched on first use, when old, and (rate-limited) when ``kid`` is not in it.

        Only a caller that cannot be answered without new keys waits for a fetch: the first ones, and
        one whose token names a ``kid`` the current keys lack. When the keys are merely old, every
        caller is answered from them at once while one refresh runs in the background, so a slow or
        failing key endpoint never stalls verification.
        """
        keyset = self._keyset
        if keyset is None or self._wants_new_key(keyset, kid):
            return await self._refresh(kid)
        if self._clock() - keyset.fetched_at >= self._refresh_every:
            self._refresh_in_background()
        return keyset

    def _refresh_in_background(self) -> None:
        running = self._background
        if (running is not None and not running.done()) or self._clock() - self._tried_at < self._min_interval:
            return
        self._background = asyncio.ensure_future(self._refresh(None))
        self._background.add_done_callback(_seen)

    async def _refresh(self, kid: str | None) -> KeySet:
        async with self._lock:  # concurrent callers wait for one fetch
            keyset = self._keyset
            if keyset is not None and not self._wants_refresh(keyset, kid):
                return keyset
            if self._clock() - self._tried_at < self._min_interval:
                if keyset is None:
                    raise ReviewUnavailable(self._last_error, retry_after=max(1, int(self._min_interval)))
                return keyset
            self._tried_at = self._clock()
            try:
                self._keyset = await self._fetch()
            except ReviewUnavailable as error:
                self._last_error = f"the service account keys could not be fetched: {error.message}"
                if keyset is None:
                    raise ReviewUnavailable(self._last_error, retry_after=error.retry_after) from None
                log.warning("refreshing the service account keys failed, still using the last ones: %s", error.message)
                return keyset
            return self._keyset

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            # A defect of the refresh is _seen's to log (its class only): its text, which may quote key
            # material, must not escape from close() either.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
            self._background = None
        await self._api.close()

    def _wants_refresh(self, keyset: KeySet, kid: str | None) -> bool:
        return self._clock() - keyset.fetched_at >= self._refresh_every or self._wants_new_key(keyset, kid)

    def _wants_new_key(self, keyset: KeySet, kid: str | None) -> bool:
        return kid is not None and kid not in keyset.keys and self._clock() - self._tried_at >= self._min_interval

    async def _fetch(self) -> KeySet:
        self.fetches += 1
        if self._credentials is not None:
            discovery = await self._get_json(self._credentials.server + DISCOVERY_PATH)
            jwks_url = self._credentials.server + JWKS_PATH
        else:
            discovery = await self._get_json(f"{self._issuer}{DISCOVERY_PATH}")
            published = discovery.get("jwks_uri")
            if not isinstance(published, str) or not published.startswith("https://"):
                raise ReviewUnavailable(f"the discovery document of {self.source} has no https jwks_uri")
            jwks_url = published
        issuer = discovery.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise ReviewUnavailable(f"the discovery document of {self.source} has no issuer")
        if self._issuer is not None and issuer.rstrip("/") != self._issuer:
            raise ReviewUnavailable(
                f"{self.source} publishes the issuer {issuer[:200]!r}, not {self._issuer!r} as configured: "
                "pass the issuer the cluster's tokens carry in 'iss', or none"
            )
        keys = self._parse_keys(await self._get_json(jwks_url, accept=f"{JWKS_MEDIA_TYPE}, application/json"))
        log.info("fetched %d service account key(s) of issuer %s from %s", len(keys), issuer, self.source)
        return KeySet(issuer=issuer, keys=MappingProxyType(keys), fetched_at=self._clock())

    def _parse_keys(self, document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
        keys: dict[str, jwt.PyJWK] = {}
        listed = document.get("keys")
        for raw in listed if isinstance(listed, list) else []:
            # Only public signing keys: an "oct" (HMAC) key would let a token be signed by anyone who read it.
            if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC") or raw.get("use", "sig") != "sig":
                continue
            try:
                key = self.jwt.PyJWK(raw)
            except self.jwt.PyJWTError:
                continue
            if key.algorithm_name in ALGORITHMS:
                kid = raw.get("kid")
                keys[kid if isinstance(kid, str) else f"#{len(keys)}"] = key
        if not keys:
            raise ReviewUnavailable(f"{self.source} publishes no usable signing key (RSA or EC)")
        return keys

    async def _get_json(self, url: str, *, accept: str = "application/json") -> Mapping[str, Any]:
        answer = await self._api.get_json(url, accept=accept)
        if answer.status in (401, 403):
            if answer.status == 401:
                self._api.token_changed_since_401()  # our own token may have been rotated: read it again next time
            raise ReviewUnavailable(
                f"{url} refused the verifier's own credentials ({answer.status}"
                + (", not a valid token" if answer.status == 401 else "")
                + f"): they need the ClusterRole {DISCOVERY_ROLE} (get on {DISCOVERY_PATH} and {JWKS_PATH}), "
                "which Kubernetes binds to every service account by default"
            )
        if answer.status != 200:
            redirect = ", a redirect, which is never followed" if 300 <= answer.status < 400 else ""
            raise ReviewUnavailable(f"{url} answered {answer.status}{redirect}", retry_after=5)
        if not isinstance(answer.body, dict):
            raise ReviewUnavailable(f"{url} did not answer a JSON object")
        document: Mapping[str, Any] = answer.body
        return document


def _seen(task: asyncio.Future[KeySet]) -> None:
    # A background refresh that failed with no keys to fall back on: the next caller waits and sees why.
    # Any other exception is a defect nobody awaits: logged here (its class, never its text), not lost.
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ReviewUnavailable):
        log_defect("refreshing the service account keys in the background", error)
