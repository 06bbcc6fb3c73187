"""The ServiceAccounts of the cluster, as the review needs them: a list-and-watch cache over aiohttp.

One cache per process, started with the server (``cleanup_ctx``); until its first list is in, each
lookup is a direct GET (the server is ready at once: only the ServiceAccount path needs the cache).
It keeps, for each ServiceAccount, only its annotations under the prefix (most
have none, and share one empty mapping), so 10,000 ServiceAccounts cost a few MiB
(docs/serviceaccount-opt-in.md). The list is read in pages; the watch resumes from the last
resourceVersion it saw (bookmarks keep it fresh), relists when the API server says that version is
gone (410), and retries any other failure after a bounded, jittered backoff.

A Pod whose ServiceAccount is not in the cache (created in the same ``kubectl apply``, its watch
event not here yet) is answered after a direct GET bounded by ``service_account_lookup_seconds``.
So is every Pod while the watch has been silent longer than ``SILENT_AFTER_SECONDS`` (no event, no
bookmark, no watch or list answered): the cache may then be missing changes, and is not trusted.
When the account cannot be read, the review is told why, and refuses the Pod (fail closed).

The credential is the Pod's own in-cluster token file (``OwnToken``: re-read when it changed, the
kubelet rotates it; the last good token kept over a bad read); it is never logged, and no message
quotes a response body.
"""

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from webhook.core.contract import Contract
from webhook.core.service_accounts import AccountAnnotations, token_annotations
from webhook.server.metrics import Metrics
from webhook.server.settings import ServerSettings

log = logging.getLogger("token_projector.service_accounts")

PAGE_SIZE = 500
WATCH_SECONDS = 60
"""The API server ends each watch after this; the cache then watches again, so even a cluster where
nothing changes answers it at least this often (besides the bookmarks it sends)."""
SILENT_AFTER_SECONDS = WATCH_SECONDS + 30
"""A watch silent this long (no event, bookmark or new watch answered) may be dead without a word: the
cache is not trusted any more, each lookup is a GET (which fails closed), until the watch is back."""
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 30.0
_NONE: Mapping[str, str] = {}
"""The annotations of every ServiceAccount that has none of ours: one shared mapping, not 10,000."""


class Gone(Exception):
    """The resourceVersion the watch would resume from is too old (HTTP 410): relist."""


class ApiFailure(Exception):
    """The API server could not be read; the message says why in words a person can act on."""


class Malformed(ApiFailure):
    """A list page or watch event parsed but is not the shape the API defines: relist, the events may be lost."""


class ServiceAccountCache:
    """ServiceAccounts' token-projector annotations by (namespace, name), kept current by a watch."""

    def __init__(
        self,
        settings: ServerSettings,
        contract: Contract,
        *,
        metrics: Metrics | None = None,
        silent_after: float = SILENT_AFTER_SECONDS,
    ) -> None:
        self._settings, self._contract, self._metrics = settings, contract, metrics
        self._silent_after = silent_after
        self._heard_at = float("-inf")
        """When the API server last told the cache it is current (monotonic): a list, a watch opened, an event."""
        if metrics is not None:
            metrics.service_accounts_cached.set_function(lambda: len(self._accounts))
        self._accounts: dict[tuple[str, str], Mapping[str, str]] = {}
        self._resource_version = ""
        self._session: aiohttp.ClientSession | None = None
        self._token = OwnToken(Path(settings.kube_token_file))
        self.synced = asyncio.Event()
        self.relists = 0
        self.watches = 0

    def __len__(self) -> int:
        return len(self._accounts)

    def __repr__(self) -> str:
        return f"<ServiceAccountCache {len(self._accounts)} accounts, synced={self.synced.is_set()}>"

    async def start(self) -> None:
        context = ssl.create_default_context(cafile=self._settings.kube_ca_file)
        self._session = aiohttp.ClientSession(
            base_url=self._settings.kube_api_url.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(ssl=context),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def lookup(self, namespace: str, name: str) -> AccountAnnotations:
        """The account's annotations from the cache while its watch is alive, else from a GET bounded in time,
        else why not."""
        cached = self._accounts.get((namespace, name))
        if cached is not None and time.monotonic() - self._heard_at <= self._silent_after:
            self._count("cache")
            return AccountAnnotations(namespace, name, cached)
        seconds = self._settings.service_account_lookup_seconds
        why = ""
        try:
            async with asyncio.timeout(seconds):
                found = await self._get(namespace, name)
        except TimeoutError:
            why = f"the Kubernetes API did not answer within {seconds:g} s"
        except ApiFailure as failure:
            why = str(failure)
        except (aiohttp.ClientError, OSError, ValueError) as error:
            why = _said(error)
        if why:
            self._count("unreadable")
            log.warning("ServiceAccount %s/%s could not be read: %s", namespace, name, why)
            return AccountAnnotations(namespace, name, None, why)
        self._count("api")
        return AccountAnnotations(namespace, name, found)

    def _count(self, source: str) -> None:
        if self._metrics is not None:
            self._metrics.service_account_lookups.labels(source).inc()

    async def _get(self, namespace: str, name: str) -> Mapping[str, str]:
        path = f"api/v1/namespaces/{quote(namespace, safe='')}/serviceaccounts/{quote(name, safe='')}"
        async with self._request(path) as response:
            if response.status == 404:
                return _NONE  # no such account: it sets nothing (the API server refuses its Pods anyway)
            await _check(response, f"GET of ServiceAccount {namespace}/{name}")
            account = orjson.loads(await response.read())
        # Not stored: only the watch writes the cache, so a GET that raced a deletion cannot outlive it.
        return self._keep(account) or _NONE

    async def run(self) -> None:
        """List, then watch, forever; relist on 410, back off and resume on any other failure."""
        delay = BACKOFF_FIRST
        while True:
            listing, started = not self._resource_version, time.monotonic()
            try:
                if listing:
                    await self._list()
                    self.synced.set()
                    started = time.monotonic()
                if await self._watch() or time.monotonic() - started > 1:
                    delay = BACKOFF_FIRST
                else:  # ended at once with nothing: no tight loop against a server that keeps doing that
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
            except asyncio.CancelledError:
                raise
            except Gone:
                self._resource_version = ""
                if listing or time.monotonic() - started < 1:
                    # A 410 on a list's continue token, or on a watch just opened: at once, again and again,
                    # would be a tight loop against an API server that keeps answering 410.
                    log.info("ServiceAccount list or watch expired (410 Gone): listing again in %.1f s", delay)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 -- jitter, not a secret
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    log.info("ServiceAccount watch expired (410 Gone): listing again")
            except Exception as error:  # whatever ends a pass, the cache must not stop following
                if isinstance(error, Malformed):
                    self._resource_version = ""  # what the bad event said is lost: the next list has it
                log.warning(
                    "ServiceAccount cache: %s; retrying in %.1f s",
                    _said(error),
                    delay,
                    extra={"fields": {"retry_seconds": round(delay, 1)}},
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 -- jitter, not a secret
                delay = min(delay * 2, BACKOFF_MAX)

    async def _list(self) -> None:
        self.relists += 1
        accounts: dict[tuple[str, str], Mapping[str, str]] = {}
        token, version = "", ""
        while True:
            params = {"limit": str(PAGE_SIZE)} | ({"continue": token} if token else {})
            async with self._request("api/v1/serviceaccounts", params=params) as response:
                if response.status == 410:
                    raise Gone()  # the continue token expired between pages: start over
                await _check(response, "list of ServiceAccounts")
                page = orjson.loads(await response.read())
            if not isinstance(page, dict):
                raise Malformed("a page of the list of ServiceAccounts is not a JSON object")
            items, metadata = page.get("items") or [], page.get("metadata") or {}
            if not isinstance(items, list) or not isinstance(metadata, dict):
                raise Malformed("a page of the list of ServiceAccounts has no list of items or no metadata object")
            for account in items:
                self._store(account, into=accounts)
            token, version = _text(metadata.get("continue")), _text(metadata.get("resourceVersion"))
            if not token:
                break
        self._accounts, self._resource_version = accounts, version
        self._heard_at = time.monotonic()
        log.info("ServiceAccount cache listed", extra={"fields": {"accounts": len(accounts)}})

    async def _watch(self) -> int:
        """Watch from the last resourceVersion until the stream ends; the number of events applied."""
        self.watches += 1
        applied = 0
        params = {
            "watch": "true",
            "resourceVersion": self._resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._silent_after)
        async with self._request("api/v1/serviceaccounts", params=params, timeout=timeout) as response:
            if response.status == 410:
                raise Gone()
            await _check(response, "watch of ServiceAccounts")
            self._heard_at = time.monotonic()  # the watch replays from our version: nothing is missed from here
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._apply(orjson.loads(line))
                        self._heard_at = time.monotonic()
                        applied += 1
        return applied

    def _apply(self, event: object) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise Malformed("a ServiceAccount watch event is not a JSON object with an object in it")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone()
            status = code if isinstance(code, int) else "?"
            raise ApiFailure(f"the watch ended with an error (HTTP {status}, {_text(obj.get('reason'))})")
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            raise Malformed("a ServiceAccount watch event has no metadata object")  # nothing of it is quoted
        if kind in ("ADDED", "MODIFIED"):
            self._store(obj, into=self._accounts)
        elif kind == "DELETED":
            self._accounts.pop((_text(metadata.get("namespace")), _text(metadata.get("name"))), None)
        elif kind != "BOOKMARK":
            raise Malformed("a ServiceAccount watch event has no known type")
        version = _text(metadata.get("resourceVersion"))
        if version:
            self._resource_version = version

    def _store(self, account: object, *, into: dict[tuple[str, str], Mapping[str, str]]) -> None:
        annotations = self._keep(account)
        if annotations is None or not isinstance(account, dict):
            raise Malformed("a ServiceAccount is not a JSON object with a metadata object")
        metadata = account["metadata"]
        into[(_text(metadata.get("namespace")), _text(metadata.get("name")))] = annotations

    def _keep(self, account: object) -> Mapping[str, str] | None:
        """What the cache keeps of ``account``: its annotations under the prefix, or None if it is no account."""
        if not isinstance(account, dict) or not isinstance(account.get("metadata"), dict):
            return None
        annotations = account["metadata"].get("annotations")
        if not isinstance(annotations, dict):
            return _NONE
        return token_annotations(annotations, self._contract) or _NONE

    def _request(
        self, path: str, *, params: dict[str, str] | None = None, timeout: aiohttp.ClientTimeout | None = None
    ) -> Any:
        if self._session is None:
            raise ApiFailure("the ServiceAccount cache is not started")
        token = self._token.read()
        return self._session.get(
            path,
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout or aiohttp.ClientTimeout(total=30),
            allow_redirects=False,
        )


class OwnToken:
    """The webhook's own API token from the file the kubelet rotates: the same rules as
    ``audience_token.token_read.RotatingToken``, kept here because the ``token-projector`` distribution
    does not depend on ``audience_token`` (pyproject: ``serve`` needs only its own dependencies).

    The file is re-read when its ``stat`` (of the resolved path) changed or the token is a minute old;
    what it holds must look like a token (visible ASCII, under 64 KiB) or it never reaches a header; a
    failed re-read keeps the last good token (one warning, never the content).
    """

    MAX_BYTES = 64 * 1024
    MAX_AGE_SECONDS = 60.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: str | None = None
        self._signature: tuple[int, int, int, int] | None = None
        self._read_at = float("-inf")
        self._warned = False

    def __repr__(self) -> str:
        return f"<OwnToken {self.path} {'read' if self._token is not None else 'not read'}>"

    def read(self) -> str:
        """The current token; ApiFailure (saying why) if no good token was ever read."""
        try:
            info = os.stat(self.path)
            signature: tuple[int, int, int, int] | None = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            signature = None
        now = time.monotonic()
        if self._token is not None and signature == self._signature and now - self._read_at < self.MAX_AGE_SECONDS:
            return self._token
        try:
            token = self._read_file()
        except ApiFailure as failure:
            if self._token is None:
                raise
            if not self._warned:
                self._warned = True
                log.warning("%s; keeping the last good token", failure)
            return self._token
        self._token, self._signature, self._read_at, self._warned = token, signature, now, False
        return token

    def _read_file(self) -> str:
        what = f"the token file {self.path}"
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(self.MAX_BYTES + 1)
        except OSError as error:
            raise ApiFailure(f"{what} cannot be read ({error.strerror or type(error).__name__})") from None
        raw = raw.strip()
        if not raw or len(raw) > self.MAX_BYTES or not _VISIBLE_ASCII.issuperset(raw):
            raise ApiFailure(f"{what} holds no token (empty, too large, or characters a token never has)")
        return raw.decode("ascii")


_VISIBLE_ASCII = frozenset(range(0x21, 0x7F))


async def _check(response: aiohttp.ClientResponse, what: str) -> None:
    if response.status == 200:
        return
    reason = {
        401: "the API server did not accept token-projector's token (401)",
        403: "token-projector may not read ServiceAccounts (403): grant it get, list and watch on serviceaccounts",
    }.get(response.status, f"the API server answered HTTP {response.status}")
    raise ApiFailure(f"{what}: {reason}")


def _said(error: BaseException) -> str:
    """A failure in words, without a response body or anything secret in it (only the class of the rest)."""
    if isinstance(error, ApiFailure):
        return str(error)
    if isinstance(error, TimeoutError):
        return "the Kubernetes API did not answer in time"
    return f"{type(error).__name__} talking to the Kubernetes API"


def _text(value: object) -> str:
    """A name, version or token of the API's answer as a string: anything else (absent, a number, a list) is ""."""
    return value if isinstance(value, str) else ""
