"""The ServiceAccount cache under faults a real API server will not produce on demand, from a named fake.

The behaviour against the real kube-apiserver (the race, changes, deletions, a broken watch, 10,000
accounts) is in tests/e2e/test_service_account_opt_in.py. Here a FAKE API server on loopback, over
real TLS, answers what the real one only does under load or misconfiguration: a 410 on a watch, a
GET that never answers, a 403, an event line larger than aiohttp's line limit.
"""

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.helpers import admission_review, make_pod
from tests.server.conftest import StartWebhook
from tests.tls_material import cert_and_key, client_context, free_port, make_certs
from webhook.core.contract import Contract
from webhook.core.review import review
from webhook.server.app import run_server
from webhook.server.service_accounts import ServiceAccountCache
from webhook.server.settings import ServerSettings
from webhook.server.tls import load_context

TOKEN = "fake-api-token-never-logged"
AUDIENCE = "token-projector.io/audience"


@dataclass
class FakeApiServer:
    """A FAKE kube-apiserver: lists, watches and GETs ServiceAccounts from a dict, with faults on request."""

    accounts: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    version: int = 1
    watch_gone_once: bool = False
    watch_always_gone: bool = False
    watch_ends_at_once: bool = False
    hang_get: bool = False
    forbid: bool = False
    big_annotation: int = 0
    list_answer: Any = None
    list_gone: bool = False
    """When set, every list answers 410 (an expired continue token), again and again."""
    stall_watches: bool = False
    """When set, a new watch is never answered (its headers never come), as from a stalled API server."""
    """When set, what every list answers instead of the accounts (a fault on purpose)."""
    lists: int = 0
    watches: int = 0
    authorizations: set[str] = field(default_factory=set)
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    """What the current watch sends next, one JSON value a line (not always an event: faults are on purpose)."""

    def item(self, key: tuple[str, str]) -> dict[str, Any]:
        annotations = dict(self.accounts[key])
        if self.big_annotation:
            annotations["kubectl.kubernetes.io/last-applied-configuration"] = "x" * self.big_annotation
        return {
            "metadata": {
                "namespace": key[0],
                "name": key[1],
                "annotations": annotations,
                "resourceVersion": str(self.version),
            }
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/serviceaccounts", self.list_or_watch)
        app.router.add_get("/api/v1/namespaces/{namespace}/serviceaccounts/{name}", self.get)
        return app

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        if self.forbid:
            return web.json_response({"kind": "Status", "code": 403, "message": "forbidden"}, status=403)
        if request.query.get("watch") != "true":
            self.lists += 1
            if self.list_gone:
                return web.json_response({"kind": "Status", "code": 410, "reason": "Expired"}, status=410)
            if self.list_answer is not None:
                return web.json_response(self.list_answer)
            items = [self.item(key) for key in self.accounts]
            return web.json_response({"items": items, "metadata": {"resourceVersion": str(self.version)}})
        self.watches += 1
        this_watch = self.watches
        if self.stall_watches:
            await asyncio.sleep(3600)
        response = web.StreamResponse()
        await response.prepare(request)
        if self.watch_ends_at_once:
            return response
        if self.watch_gone_once or self.watch_always_gone:
            self.watch_gone_once = False
            event = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            await response.write(orjson.dumps(event) + b"\n")
            return response
        while True:
            event = await self.events.get()
            if self.watches != this_watch:  # the client has since watched again: this stream is dead
                self.events.put_nowait(event)
                return response
            await response.write(orjson.dumps(event) + b"\n")

    async def get(self, request: web.Request) -> web.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        if self.hang_get:
            await asyncio.sleep(3600)
        if self.forbid:
            return web.json_response({"kind": "Status", "code": 403}, status=403)
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.accounts:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(self.item(key))


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[FakeApiServer, ServerSettings]]:
    certs = make_certs(tmp_path / "certs")
    server = FakeApiServer()
    runner = web.AppRunner(server.app(), shutdown_timeout=0.5)
    await runner.setup()
    cert, key = cert_and_key(certs)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=load_context(cert, key)[0])
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp_path / "token").write_text(TOKEN)
    settings = ServerSettings(
        kube_api_url=f"https://127.0.0.1:{port}",
        kube_token_file=str(tmp_path / "token"),
        kube_ca_file=str(certs / "ca.crt"),
        service_account_opt_in=True,
        service_account_lookup_seconds=0.5,
    )
    yield server, settings
    await runner.cleanup()


@contextlib.asynccontextmanager
async def cache_running(settings: ServerSettings, **options: Any) -> AsyncIterator[ServiceAccountCache]:
    """A started cache, listing and watching in a task, stopped and closed at the end."""
    cache = ServiceAccountCache(settings, Contract(), **options)
    await cache.start()
    task = asyncio.create_task(cache.run())
    try:
        yield cache
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cache.close()


@pytest.fixture
async def running(
    fake: tuple[FakeApiServer, ServerSettings],
) -> AsyncIterator[tuple[FakeApiServer, ServiceAccountCache]]:
    server, settings = fake
    async with cache_running(settings) as cache:
        yield server, cache


async def until(check: Any, within: float = 5) -> None:
    """Poll ``check`` every 20 ms until it holds; fail after ``within`` seconds."""
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within} s")


async def test_a_410_on_the_watch_relists_and_the_cache_holds_what_changed_meanwhile(
    fake: tuple[FakeApiServer, ServerSettings],
) -> None:
    server, settings = fake
    server.accounts[("shop", "api")] = {AUDIENCE: "vault"}
    server.watch_gone_once = True
    async with cache_running(settings) as cache:
        await cache.synced.wait()
        server.accounts[("shop", "api")] = {AUDIENCE: "data-store"}
        await until(lambda: server.lists == 2)
        await until(lambda: cache.relists == 2)
        account = await cache.lookup("shop", "api")
        assert account.annotations == {AUDIENCE: "data-store"}


async def test_watch_events_update_and_delete_and_an_event_over_64_kib_is_read_whole(
    running: tuple[FakeApiServer, ServiceAccountCache],
) -> None:
    server, cache = running
    await cache.synced.wait()
    server.accounts[("shop", "api")] = {AUDIENCE: "vault"}
    server.big_annotation = 200_000
    await server.events.put({"type": "ADDED", "object": server.item(("shop", "api"))})
    await until(lambda: len(cache) == 1)
    assert (await cache.lookup("shop", "api")).annotations == {AUDIENCE: "vault"}, "only the prefix is kept"
    await server.events.put({"type": "DELETED", "object": server.item(("shop", "api"))})
    await until(lambda: len(cache) == 0)


@pytest.mark.parametrize(
    "bad",
    [[], {"type": "MODIFIED", "object": "x"}, {"type": "MODIFIED", "object": {"metadata": "x"}}, "x", 7],
    ids=["a list", "an object that is a string", "metadata that is a string", "a string", "a number"],
)
async def test_a_watch_line_that_is_no_event_relists_and_the_cache_still_follows_later_changes(
    running: tuple[FakeApiServer, ServiceAccountCache], caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    server, cache = running
    await cache.synced.wait()
    await until(lambda: server.watches == 1)
    server.accounts[("shop", "api")] = {AUDIENCE: "vault"}  # changed while the bad line is on its way
    await server.events.put(bad)
    await until(lambda: cache.relists == 2 and server.watches == 2)
    assert (await cache.lookup("shop", "api")).annotations == {AUDIENCE: "vault"}, "the relist has the change"
    assert "is not" in caplog.text or "has no" in caplog.text
    changed = server.item(("shop", "api"))
    changed["metadata"]["annotations"] = {AUDIENCE: "data-store"}  # only the watch says so, not a GET
    await server.events.put({"type": "MODIFIED", "object": changed})

    async def annotations() -> object:
        return (await cache.lookup("shop", "api")).annotations

    await until_async(annotations, {AUDIENCE: "data-store"})


async def test_a_list_page_that_is_no_list_is_retried_and_the_server_becomes_ready_once_it_is(
    fake: tuple[FakeApiServer, ServerSettings], caplog: pytest.LogCaptureFixture
) -> None:
    server, settings = fake
    server.list_answer = {"items": "x", "metadata": []}
    server.accounts[("shop", "api")] = {AUDIENCE: "vault"}
    async with cache_running(settings) as cache:
        await until(lambda: server.lists >= 2)
        assert not cache.synced.is_set()
        assert "has no list of items" in caplog.text, "the failure is logged, not swallowed"
        server.list_answer = None
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert (await cache.lookup("shop", "api")).annotations == {AUDIENCE: "vault"}


async def test_a_cached_account_is_read_by_get_once_the_watch_is_silent_past_the_bound_and_refused_if_unreadable(
    fake: tuple[FakeApiServer, ServerSettings], caplog: pytest.LogCaptureFixture
) -> None:
    server, settings = fake
    server.accounts[("shop", "api")] = {}
    async with cache_running(settings, silent_after=0.5) as cache:
        await cache.synced.wait()
        await until(lambda: server.watches == 1)
        assert (await cache.lookup("shop", "api")).annotations == {}
        server.stall_watches = True  # the open watch sends nothing more, and no new one is answered
        server.accounts[("shop", "api")] = {AUDIENCE: "vault"}  # annotated during the outage: no event says so
        await asyncio.sleep(0.7)
        assert (await cache.lookup("shop", "api")).annotations == {AUDIENCE: "vault"}, "read by GET, not the cache"
        server.hang_get = True
        account = await cache.lookup("shop", "api")
        assert account.annotations is None, "unreadable: the review refuses the Pod"
        assert account.unreadable_because == "the Kubernetes API did not answer within 0.5 s"


async def test_a_quiet_watch_within_the_bound_answers_from_the_cache(
    fake: tuple[FakeApiServer, ServerSettings],
) -> None:
    server, settings = fake
    server.accounts[("shop", "api")] = {AUDIENCE: "vault"}
    async with cache_running(settings, silent_after=30) as cache:
        await cache.synced.wait()
        server.hang_get = True
        assert (await cache.lookup("shop", "api")).annotations == {AUDIENCE: "vault"}


async def test_a_get_that_never_answers_refuses_the_pod_after_the_bound_saying_so(
    running: tuple[FakeApiServer, ServiceAccountCache],
) -> None:
    server, cache = running
    await cache.synced.wait()
    server.hang_get = True
    account = await cache.lookup("shop", "new")
    assert account.annotations is None
    assert account.unreadable_because == "the Kubernetes API did not answer within 0.5 s"
    body = admission_review(make_pod(serviceAccountName="new"))
    response = review(body, Contract(), service_account=account).response["response"]
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("token-projector could not read ServiceAccount shop/new")
    assert "the Kubernetes API did not answer within 0.5 s" in response["status"]["message"]


async def test_a_forbidden_read_says_which_rbac_is_missing_and_never_logs_the_token(
    fake: tuple[FakeApiServer, ServerSettings], caplog: pytest.LogCaptureFixture
) -> None:
    server, settings = fake
    server.forbid = True
    caplog.set_level(logging.DEBUG)
    async with cache_running(settings) as cache:
        account = await cache.lookup("shop", "api")
        assert "grant it get, list and watch on serviceaccounts" in account.unreadable_because
        await until(lambda: "retrying in" in caplog.text)
        assert not cache.synced.is_set()
        assert server.authorizations == {f"Bearer {TOKEN}"}
        assert TOKEN not in caplog.text
        assert TOKEN not in repr(cache)


def put_token(path: Path, content: bytes | None) -> None:
    """Write ``content`` to the token file, or remove it if None."""
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)


@pytest.mark.parametrize(
    "bad",
    [b"", b"two words", b"line\nbreak", "t\u00f6ken".encode(), None],
    ids=["empty", "a space", "a newline", "UTF-8", "gone"],
)
async def test_a_bad_re_read_of_its_own_token_file_keeps_the_last_good_token_and_sends_nothing_of_it(
    running: tuple[FakeApiServer, ServiceAccountCache],
    fake: tuple[FakeApiServer, ServerSettings],
    caplog: pytest.LogCaptureFixture,
    bad: bytes | None,
) -> None:
    server, cache = running
    token_file = Path(fake[1].kube_token_file)
    await cache.synced.wait()
    put_token(token_file, bad)
    server.accounts[("shop", "new")] = {AUDIENCE: "vault"}
    server.authorizations.clear()
    assert (await cache.lookup("shop", "new")).annotations == {AUDIENCE: "vault"}
    assert server.authorizations == {f"Bearer {TOKEN}"}
    assert "keeping the last good token" in caplog.text
    put_token(token_file, b"rotated-token")
    server.authorizations.clear()
    await cache.lookup("shop", "new")
    assert server.authorizations == {"Bearer rotated-token"}, "a good rotation is read at once"


async def test_a_watch_that_keeps_ending_at_once_is_retried_with_backoff_not_in_a_tight_loop(
    fake: tuple[FakeApiServer, ServerSettings],
) -> None:
    server, settings = fake
    server.watch_ends_at_once = True
    async with cache_running(settings) as cache:
        await cache.synced.wait()
        await asyncio.sleep(1.2)
        assert 2 <= server.watches <= 5, server.watches  # 0.2 + 0.4 + 0.8 s apart


async def test_a_list_that_keeps_answering_410_is_retried_with_backoff_not_in_a_tight_loop(
    fake: tuple[FakeApiServer, ServerSettings],
) -> None:
    server, settings = fake
    server.list_gone = True
    async with cache_running(settings) as cache:
        await asyncio.sleep(1.2)
        assert 2 <= server.lists <= 5, server.lists  # 0.2 + 0.4 + 0.8 s apart
        server.list_gone = False
        await asyncio.wait_for(cache.synced.wait(), 5)


async def test_a_watch_that_answers_410_as_soon_as_it_opens_is_not_relisted_in_a_tight_loop(
    fake: tuple[FakeApiServer, ServerSettings],
) -> None:
    server, settings = fake
    server.watch_always_gone = True
    async with cache_running(settings) as cache:
        await cache.synced.wait()
        await asyncio.sleep(1.2)
        assert 2 <= server.lists <= 6, server.lists


async def test_an_account_absent_from_the_api_server_sets_nothing(
    running: tuple[FakeApiServer, ServiceAccountCache],
) -> None:
    _, cache = running
    await cache.synced.wait()
    account = await cache.lookup("shop", "missing")
    assert account.annotations == {}


async def test_the_service_account_path_with_the_mode_off_answers_404_saying_how_to_turn_it_on(
    start_webhook: StartWebhook,
) -> None:
    webhook = await start_webhook()
    body = orjson.dumps(admission_review(make_pod()))
    async with webhook.session.post(
        f"{webhook.url}/mutate/service-accounts", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 404
        assert "set --service-account-opt-in" in (await response.json())["error"]


async def test_the_server_is_ready_while_service_accounts_cannot_be_listed_and_only_their_path_refuses(
    fake: tuple[FakeApiServer, ServerSettings], tmp_path: Path
) -> None:
    # Missing RBAC for serviceaccounts must not take the whole webhook down (every namespace's annotated
    # Pods): /readyz is ready, /mutate answers, and /mutate/service-accounts refuses saying what to grant.
    server, api = fake
    server.forbid = True
    server.accounts[("api", "api")] = {AUDIENCE: "vault"}
    cert, key = cert_and_key(tmp_path / "certs")
    settings = dataclasses.replace(
        api,
        cert_file=cert,
        key_file=key,
        address="127.0.0.1",
        port=free_port(),
        probe_port=free_port(),
        drain_seconds=0,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(run_server(settings, Contract(), stop=stop))
    context = client_context(tmp_path / "certs")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:

        async def ready() -> int:
            try:
                async with session.get(f"http://127.0.0.1:{settings.probe_port}/readyz") as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                return 0

        async def answer(path: str, pod: dict[str, Any]) -> dict[str, Any]:
            async with session.post(
                f"https://127.0.0.1:{settings.port}{path}",
                data=orjson.dumps(admission_review(pod)),
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 200
                return dict((await response.json())["response"])

        try:
            await until_async(ready, 200)
            annotated = make_pod(annotations={AUDIENCE: "vault"})
            assert (await answer("/mutate", annotated))["allowed"] is True, "the main path works without the list"
            refused = await answer("/mutate/service-accounts", make_pod(serviceAccountName="api"))
            assert refused["allowed"] is False
            assert "grant it get, list and watch on serviceaccounts" in refused["status"]["message"]
            server.forbid = False
            served = await answer("/mutate/service-accounts", make_pod(serviceAccountName="api"))
            assert served["auditAnnotations"]["injected"].endswith("from=ServiceAccount:api/api"), "by GET"
            await until(lambda: server.watches >= 1, within=10)  # listed: the next answer is from the cache
            served = await answer("/mutate/service-accounts", make_pod(serviceAccountName="api"))
            assert served["auditAnnotations"]["injected"].endswith("from=ServiceAccount:api/api")
            async with session.get(f"http://127.0.0.1:{settings.probe_port}/metrics") as response:
                metrics = await response.text()
            assert 'token_projector_service_account_lookups_total{source="unreadable"} 1.0' in metrics
            assert 'token_projector_service_account_lookups_total{source="api"} 1.0' in metrics
            assert 'token_projector_service_account_lookups_total{source="cache"} 1.0' in metrics
            assert "token_projector_service_accounts_cached 1.0" in metrics
        finally:
            stop.set()
            await serving


async def until_async(check: Any, expected: object, within: float = 5) -> None:
    """Poll the coroutine ``check`` every 50 ms until it gives ``expected``; fail after ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        if await check() == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {expected!r} within {within} s")
