"""``audience_token.httpx.BearerAuth``: real httpx clients, sync and async, against servers on loopback sockets."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audience_token.errors import TokenFileError
from audience_token.httpx import BearerAuth
from audience_token.token_file import TokenFile
from tests.audience_token.caller_servers import FakeReceiver, default_ports, fake_token
from tests.audience_token.conftest import Clock
from tests.audience_token.kubelet_volume import ProjectedVolume
from tests.audience_token.tls import Material

pytest_plugins = (
    "tests.audience_token.caller_fixtures",
)  # its fixtures: first, volume, clock, tokens, home, elsewhere


def test_every_request_carries_the_current_token_and_a_rotated_one_within_a_second(
    home: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile, clock: Clock, first: str
) -> None:
    second = fake_token()
    with httpx.Client(auth=BearerAuth(tokens)) as client:
        assert client.get(home.url()).status_code == 200
        volume.rotate({"token": second})
        clock.now += 1
        assert client.get(home.url()).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {second}"]


async def test_an_async_client_carries_the_current_token_too(
    home: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile, clock: Clock, first: str
) -> None:
    second = fake_token()
    async with httpx.AsyncClient(auth=BearerAuth(tokens)) as client:
        assert (await client.get(home.url())).status_code == 200
        volume.rotate({"token": second})
        clock.now += 1
        assert (await client.get(home.url())).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {second}"]


def test_a_401_after_a_rotation_reads_the_file_again_and_retries_once_with_the_new_token(
    home: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile, first: str
) -> None:
    second = fake_token()
    with httpx.Client(auth=BearerAuth(tokens)) as client:
        client.get(home.url())
        volume.rotate({"token": second})  # the clock stands still: only the 401 can make it re-read
        home.refuse.add(first)
        response = client.post(home.url(), content=b"the body, sent twice")
    assert response.status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
    assert [s.body for s in home.seen[1:]] == [b"the body, sent twice"] * 2


async def test_an_async_client_retries_a_401_after_a_rotation_too(
    home: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile, first: str
) -> None:
    second = fake_token()
    async with httpx.AsyncClient(auth=BearerAuth(tokens)) as client:
        await client.get(home.url())
        volume.rotate({"token": second})
        home.refuse.add(first)
        response = await client.get(home.url())
    assert response.status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]


def test_a_401_for_the_token_still_in_the_file_is_returned_without_a_second_try(
    home: FakeReceiver, tokens: TokenFile, first: str
) -> None:
    home.refuse.add(first)
    with httpx.Client(auth=BearerAuth(tokens)) as client:
        response = client.get(home.url())
    assert response.status_code == 401
    assert home.authorizations == [f"Bearer {first}"]


def test_a_streamed_body_is_not_sent_twice_but_the_next_request_has_the_new_token(
    home: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile, first: str
) -> None:
    second = fake_token()

    def chunks() -> Iterator[bytes]:
        yield b"once"

    with httpx.Client(auth=BearerAuth(tokens)) as client:
        client.get(home.url())
        volume.rotate({"token": second})
        home.refuse.add(first)
        assert client.post(home.url(), content=chunks()).status_code == 401
        assert client.get(home.url()).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
    assert home.seen[1].body == b"once"


def test_an_authorization_the_caller_set_is_left_alone(home: FakeReceiver, tokens: TokenFile) -> None:
    with httpx.Client(auth=BearerAuth(tokens)) as client:
        client.get(home.url(), headers={"Authorization": "Bearer the-callers-own"})
    assert home.authorizations == ["Bearer the-callers-own"]


def test_a_same_origin_redirect_keeps_the_token(home: FakeReceiver, tokens: TokenFile, first: str) -> None:
    with httpx.Client(auth=BearerAuth(tokens), follow_redirects=True) as client:
        assert client.get(home.redirect(home.url("/"))).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_token_never_follows_a_redirect_chain_to_another_host(
    home: FakeReceiver, elsewhere: FakeReceiver, tokens: TokenFile, first: str, status: int
) -> None:
    # A -> B/1 -> B/2: B/2 is the same origin as B/1, and never home.
    chain = home.redirect(elsewhere.redirect(elsewhere.url("/2"), status), status)
    with httpx.Client(auth=BearerAuth(tokens), follow_redirects=True) as client:
        assert client.get(chain).status_code == 200
    assert home.authorizations == [f"Bearer {first}"]
    assert [(s.path, s.authorization) for s in elsewhere.seen] == [("/redirect", None), ("/2", None)]


async def test_an_async_client_keeps_the_token_home_on_a_redirect_chain_too(
    home: FakeReceiver, elsewhere: FakeReceiver, tokens: TokenFile, first: str
) -> None:
    chain = home.redirect(elsewhere.redirect(elsewhere.url("/2")))
    async with httpx.AsyncClient(auth=BearerAuth(tokens), follow_redirects=True) as client:
        assert (await client.get(chain)).status_code == 200
    assert home.authorizations == [f"Bearer {first}"]
    assert elsewhere.authorizations == [None, None]


def test_another_port_of_the_same_host_is_another_origin(home: FakeReceiver, tokens: TokenFile, first: str) -> None:
    with FakeReceiver().running() as other_port, httpx.Client(auth=BearerAuth(tokens), follow_redirects=True) as c:
        c.get(home.redirect(other_port.url("/")))
    assert other_port.authorizations == [None]


def test_http_to_https_on_the_same_host_but_another_port_is_another_origin(
    home: FakeReceiver, tokens: TokenFile, material: Material
) -> None:
    with (
        FakeReceiver().running(tls=material) as secure,
        httpx.Client(
            auth=BearerAuth(tokens), follow_redirects=True, verify=ssl.create_default_context(cafile=material.ca)
        ) as client,
    ):
        assert client.get(home.redirect(secure.url("/"))).status_code == 200
    assert secure.authorizations == [None]


def test_a_redirect_the_caller_follows_itself_gets_the_token_only_at_home(
    home: FakeReceiver, elsewhere: FakeReceiver, tokens: TokenFile, first: str
) -> None:
    with httpx.Client(auth=BearerAuth(tokens)) as client:
        response = client.get(home.redirect(elsewhere.redirect(home.url("/back"))))
        while response.next_request is not None:
            response = client.send(response.next_request)
        assert response.status_code == 200
        # A request of the caller's own to that origin is not a redirect: it gets its token.
        client.get(elsewhere.url("/own"))
    assert elsewhere.authorizations == [None, f"Bearer {first}"]
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}"]


def test_a_401_from_another_origin_is_not_retried(
    home: FakeReceiver, elsewhere: FakeReceiver, volume: ProjectedVolume, tokens: TokenFile
) -> None:
    with httpx.Client(auth=BearerAuth(tokens), follow_redirects=True) as client:
        client.get(home.url())
        volume.rotate({"token": fake_token()})  # a retry would have a new token to send
        response = client.get(home.redirect(elsewhere.url("/refuse")))
    assert response.status_code == 401
    assert [s.path for s in home.seen] == ["/", "/redirect"]
    assert elsewhere.authorizations == [None]


def test_without_a_token_nothing_is_sent_and_the_error_says_what_to_check(home: FakeReceiver, tmp_path: Path) -> None:
    with (
        httpx.Client(auth=BearerAuth(TokenFile(tmp_path / "missing"))) as client,
        pytest.raises(TokenFileError, match=r"token-projector\.io/audience"),
    ):
        client.get(home.url())
    assert home.seen == []


def test_its_repr_names_the_file_and_never_the_token(tokens: TokenFile, first: str) -> None:
    tokens.read()
    assert first not in repr(BearerAuth(tokens))
    assert str(tokens.path) in repr(BearerAuth(tokens))


def test_a_caller_following_a_same_host_upgrade_to_https_itself_does_not_send_the_token(
    tokens: TokenFile, material: Material, first: str
) -> None:
    with (
        default_ports(material) as (plain, secure),
        httpx.Client(auth=BearerAuth(tokens), verify=ssl.create_default_context(cafile=material.ca)) as client,
    ):
        response = client.get(plain.redirect("https://127.0.0.1/", 301))
        assert response.next_request is not None
        assert "Authorization" in response.next_request.headers, "httpx's own rule keeps it for this upgrade"
        assert client.send(response.next_request).status_code == 200
    assert plain.authorizations == [f"Bearer {first}"]
    assert secure.authorizations == [None]


def test_with_follow_redirects_httpx_itself_keeps_the_token_on_a_same_host_upgrade_to_https(
    tokens: TokenFile, material: Material, first: str
) -> None:
    # Pins the one exception audience_token.httpx documents: httpx copies the header onto this hop
    # (http://host:80 -> https://host:443) and an Auth never sees the hops it follows itself.
    with (
        default_ports(material) as (plain, secure),
        httpx.Client(
            auth=BearerAuth(tokens), follow_redirects=True, verify=ssl.create_default_context(cafile=material.ca)
        ) as client,
    ):
        assert client.get(plain.redirect("https://127.0.0.1/", 301)).status_code == 200
    assert secure.authorizations == [f"Bearer {first}"]
