"""StaleTokenWatch: a valid token past the kubelet's refresh point means its caller caches the token file."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from audience_token.counts import Counts
from audience_token.identity import Identity
from audience_token.stale_tokens import DEFAULT_GRACE_SECONDS, StaleTokenWatch, refresh_point
from tests.audience_token.conftest import Clock

CALLER = Identity("api", "api", pod_name="api-7d4b9")
TOKEN_TEXT = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ4In0.c2lnbmF0dXJl"
ISSUED = 1_000_000.0


def claims(lifetime: float, **extra: Any) -> dict[str, Any]:
    return {"iat": ISSUED, "exp": ISSUED + lifetime, "raw": TOKEN_TEXT, **extra}


def test_the_refresh_point_is_80_percent_of_the_lifetime() -> None:
    assert refresh_point(claims(3600)) == ISSUED + 2880


def test_the_refresh_point_is_24_hours_for_a_token_that_lives_longer_than_30_hours() -> None:
    assert refresh_point(claims(48 * 3600)) == ISSUED + 24 * 3600


def test_an_extended_token_is_refreshed_by_the_lifetime_asked_for_in_warnafter() -> None:
    extended = claims(365 * 24 * 3600, **{"kubernetes.io": {"warnafter": ISSUED + 3607}})
    assert refresh_point(extended) == pytest.approx(ISSUED + 0.8 * 3607)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"iat": ISSUED},
        {"iat": ISSUED, "exp": ISSUED},
        {"iat": ISSUED, "exp": ISSUED - 10},
        {"iat": "yesterday", "exp": ISSUED},
        {"iat": True, "exp": ISSUED},
        {"iat": ISSUED, "exp": 10**400},
        {"iat": ISSUED, "exp": float("inf")},
        {"iat": float("nan"), "exp": ISSUED},
    ],
)
def test_claims_that_do_not_say_when_give_no_refresh_point_and_no_error(bad: dict[str, Any]) -> None:
    assert refresh_point(bad) is None
    assert StaleTokenWatch(wall_clock=Clock(ISSUED + 10**6)).observe(CALLER, bad) is False


def test_an_unusable_warnafter_leaves_exp_to_decide() -> None:
    assert refresh_point(claims(3600, **{"kubernetes.io": {"warnafter": 10**400}})) == ISSUED + 2880


def test_a_token_within_its_refresh_point_and_the_grace_is_not_stale(caplog: pytest.LogCaptureFixture) -> None:
    watch = StaleTokenWatch(wall_clock=Clock(ISSUED + 2880 + DEFAULT_GRACE_SECONDS))
    assert watch.observe(CALLER, claims(3600)) is False
    assert caplog.records == []


def test_a_token_past_its_refresh_point_and_the_grace_warns_naming_the_caller_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = Counts()
    watch = StaleTokenWatch(counts=counts, wall_clock=Clock(ISSUED + 2880 + DEFAULT_GRACE_SECONDS + 1))
    with caplog.at_level(logging.WARNING, logger="audience_token"):
        assert watch.observe(CALLER, claims(3600)) is True
    [record] = caplog.records
    message = record.getMessage()
    assert "api/api, Pod api-7d4b9" in message
    assert "3001 s old" in message
    assert "read the file before each call" in message
    assert TOKEN_TEXT not in message
    assert "eyJ" not in message
    assert counts.stale_tokens == {("api", "api"): 1}


def test_a_caller_is_warned_about_once_per_period() -> None:
    clock = Clock(ISSUED + 3100)
    watch = StaleTokenWatch(period=600, wall_clock=clock)
    assert watch.observe(CALLER, claims(3600)) is True
    clock.now += 599
    assert watch.observe(CALLER, claims(3600)) is False
    clock.now += 1
    assert watch.observe(CALLER, claims(3600)) is True
    assert watch.counts.stale_tokens == {("api", "api"): 2}


def test_each_pod_of_an_account_is_a_caller_of_its_own() -> None:
    watch = StaleTokenWatch(wall_clock=Clock(ISSUED + 3100))
    assert watch.observe(CALLER, claims(3600)) is True
    assert watch.observe(Identity("api", "api", pod_name="api-other"), claims(3600)) is True
    assert watch.counts.stale_tokens == {("api", "api"): 2}


def test_the_callers_remembered_are_bounded_the_oldest_forgotten_first() -> None:
    watch = StaleTokenWatch(max_callers=2, wall_clock=Clock(ISSUED + 3100))
    for pod in ("a", "b", "c"):
        assert watch.observe(Identity("api", "api", pod_name=pod), claims(3600))
    # "a" was forgotten to make room, so it is warned about again; "c" is still remembered.
    assert watch.observe(Identity("api", "api", pod_name="a"), claims(3600)) is True
    assert watch.observe(Identity("api", "api", pod_name="c"), claims(3600)) is False


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        StaleTokenWatch(period=0)
