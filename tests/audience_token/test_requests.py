"""``audience_token.requests.BearerAuth``: real requests sessions against servers on loopback sockets."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from audience_token.errors import TokenFileError
from audience_token.requests import BearerAuth
from audience_token.token_file import TokenFile
from tests.audience_token.caller_servers import FakeReceiver, default_ports, fake_token
from tests.audience_token.conftest import Clock
from tests.audience_token.kubelet_volume import ProjectedVolume
from tests.audience_token.tls import Material

pytest_plugins = (
    "tests.audience_token.caller_fixtures",
)  # its fixtures: first, volume, clock, tokens, home, elsewhere


@pytest.fixture
def session(tokens: TokenFile) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = BearerAuth(tokens)
        session.trust_env = False  # no proxy or .netrc of the machine's
        yield session


def test_every_request_carries_the_current_token_and_a_rotated_one_within_a_second(
    home: FakeReceiver, volume: ProjectedVolume, session: requests.Session, clock: Clock, first: str
) -> None:
    second = fake_token()
    assert session.get(home.url()).status_code == 200
    volume.rotate({"token": second})
    clock.now += 1
    assert session.get(home.url()).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {second}"]


def test_auth_on_one_call_works_without_a_session(home: FakeReceiver, tokens: TokenFile, first: str) -> None:
    assert requests.get(home.url(), auth=BearerAuth(tokens), timeout=10).status_code == 200
    assert home.authorizations == [f"Bearer {first}"]


def test_a_401_after_a_rotation_reads_the_file_again_and_retries_once_with_the_new_token(
    home: FakeReceiver, volume: ProjectedVolume, session: requests.Session, first: str
) -> None:
    second = fake_token()
    session.get(home.url())
    volume.rotate({"token": second})  # the clock stands still: only the 401 can make it re-read
    home.refuse.add(first)
    response = session.post(home.url(), data=b"the body, sent twice")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
    assert [s.body for s in home.seen[1:]] == [b"the body, sent twice"] * 2
    assert session.get(home.url()).status_code == 200, "the connection of the 401 went back to the pool"


def test_a_401_for_the_token_still_in_the_file_is_returned_without_a_second_try(
    home: FakeReceiver, session: requests.Session, first: str
) -> None:
    home.refuse.add(first)
    assert session.get(home.url()).status_code == 401
    assert home.authorizations == [f"Bearer {first}"]


def test_a_second_401_after_the_retry_is_returned(
    home: FakeReceiver, volume: ProjectedVolume, session: requests.Session, first: str
) -> None:
    second = fake_token()
    session.get(home.url())
    volume.rotate({"token": second})
    home.refuse.update({first, second})
    assert session.get(home.url()).status_code == 401
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]


def test_a_file_body_is_not_sent_twice_but_the_next_request_has_the_new_token(
    home: FakeReceiver, volume: ProjectedVolume, session: requests.Session, first: str
) -> None:
    second = fake_token()
    session.get(home.url())
    volume.rotate({"token": second})
    home.refuse.add(first)
    assert session.post(home.url(), data=io.BytesIO(b"once")).status_code == 401
    assert session.get(home.url()).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]


def test_an_authorization_the_caller_set_is_left_alone(home: FakeReceiver, session: requests.Session) -> None:
    session.get(home.url(), headers={"Authorization": "Bearer the-callers-own"})
    assert home.authorizations == ["Bearer the-callers-own"]


def test_a_same_origin_redirect_keeps_the_token(home: FakeReceiver, session: requests.Session, first: str) -> None:
    assert session.get(home.redirect(home.url("/"))).status_code == 200
    assert home.authorizations == [f"Bearer {first}", f"Bearer {first}"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_token_never_follows_a_redirect_chain_to_another_host(
    home: FakeReceiver, elsewhere: FakeReceiver, session: requests.Session, first: str, status: int
) -> None:
    # A -> B/1 -> B/2: B/2 is the same origin as B/1, and never home.
    assert session.get(home.redirect(elsewhere.redirect(elsewhere.url("/2"), status), status)).status_code == 200
    assert home.authorizations == [f"Bearer {first}"]
    assert [(s.path, s.authorization) for s in elsewhere.seen] == [("/redirect", None), ("/2", None)]


def test_another_port_of_the_same_host_is_another_origin(home: FakeReceiver, session: requests.Session) -> None:
    with FakeReceiver().running() as other_port:
        session.get(home.redirect(other_port.url("/")))
    assert other_port.authorizations == [None]


def test_http_to_https_on_the_same_host_but_another_port_is_another_origin(
    home: FakeReceiver, session: requests.Session, material: Material
) -> None:
    with FakeReceiver().running(tls=material) as secure:
        assert session.get(home.redirect(secure.url("/")), verify=str(material.ca)).status_code == 200
    assert secure.authorizations == [None]


def test_a_same_host_upgrade_to_https_does_not_carry_the_token_although_requests_would_keep_it(
    session: requests.Session, material: Material, first: str
) -> None:
    with default_ports(material) as (plain, secure):
        strips = session.should_strip_auth("http://127.0.0.1/", "https://127.0.0.1/")  # type: ignore[no-untyped-call]
        assert strips is False, "requests' own rule keeps it for this upgrade"
        response = session.get(plain.redirect("https://127.0.0.1/", 301), verify=str(material.ca))
        assert response.status_code == 200
    assert plain.authorizations == [f"Bearer {first}"]
    assert secure.authorizations == [None]


def test_a_redirect_not_followed_is_prepared_without_the_token(
    home: FakeReceiver, elsewhere: FakeReceiver, session: requests.Session, first: str
) -> None:
    response = session.get(home.redirect(elsewhere.url("/")), allow_redirects=False)
    assert response.next is not None
    assert "Authorization" not in response.next.headers
    session.send(response.next)
    # A request of the caller's own to that origin is not a redirect: it gets its token.
    session.get(elsewhere.url("/own"))
    assert elsewhere.authorizations == [None, f"Bearer {first}"]


def test_a_401_from_another_origin_is_not_retried(
    home: FakeReceiver, elsewhere: FakeReceiver, volume: ProjectedVolume, session: requests.Session
) -> None:
    session.get(home.url())
    volume.rotate({"token": fake_token()})  # a retry would have a new token to send
    assert session.get(home.redirect(elsewhere.url("/refuse"))).status_code == 401
    assert [s.path for s in home.seen] == ["/", "/redirect"]
    assert elsewhere.authorizations == [None]


def test_a_retry_answered_with_a_same_origin_redirect_sends_the_new_token_on_the_next_hop(
    home: FakeReceiver, volume: ProjectedVolume, session: requests.Session, first: str
) -> None:
    second = fake_token()
    session.get(home.url())
    volume.rotate({"token": second})
    home.refuse.add(first)
    assert session.get(home.redirect(home.url("/after"))).status_code == 200
    assert [(s.path, s.authorization) for s in home.seen[1:]] == [
        ("/redirect", f"Bearer {first}"),
        ("/redirect", f"Bearer {second}"),
        ("/after", f"Bearer {second}"),
    ]


def test_without_a_token_nothing_is_sent_and_the_error_says_what_to_check(home: FakeReceiver, tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"token-projector\.io/audience"):
        requests.get(home.url(), auth=BearerAuth(TokenFile(tmp_path / "missing")), timeout=10)
    assert home.seen == []


def test_its_repr_names_the_file_and_never_the_token(tokens: TokenFile, first: str) -> None:
    tokens.read()
    assert first not in repr(BearerAuth(tokens))
    assert str(tokens.path) in repr(BearerAuth(tokens))
