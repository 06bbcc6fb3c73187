"""StaleIfError and StaleVerdicts: recent verdicts kept, each within its window, for an outage only."""

from __future__ import annotations

import pytest

from audience_token.errors import ConfigError
from audience_token.stale_if_error import StaleIfError, StaleVerdicts
from tests.audience_token.conftest import Clock

KEY = b"k" * 32


def store(accepted_for: float, refused_for: float, clock: Clock, wall: Clock) -> StaleVerdicts[str]:
    return StaleVerdicts(StaleIfError(accepted_for, refused_for), maxsize=100, clock=clock, wall_clock=wall)


@pytest.fixture
def clock() -> Clock:
    return Clock(100.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(1_000_000.0)


def test_it_is_off_by_default() -> None:
    assert not StaleIfError().enabled
    assert StaleIfError(accepted_for=60).enabled


def test_an_acceptance_is_kept_for_its_window_and_no_longer(clock: Clock, wall: Clock) -> None:
    kept = store(300, 0, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    clock.now += 299
    assert kept.recall(KEY) == "accepted"
    clock.now += 1
    assert kept.recall(KEY) is None


def test_an_acceptance_is_never_kept_past_the_tokens_exp(clock: Clock, wall: Clock) -> None:
    kept = store(300, 0, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 30)
    clock.now += 29
    assert kept.recall(KEY) == "accepted"
    clock.now += 1
    assert kept.recall(KEY) is None


def test_an_acceptance_without_a_known_exp_is_not_kept(clock: Clock, wall: Clock) -> None:
    kept = store(300, 0, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=None)
    assert kept.recall(KEY) is None


def test_refusals_have_their_own_window(clock: Clock, wall: Clock) -> None:
    kept = store(300, 20, clock, wall)
    kept.keep(KEY, "refused", accepted=False)
    clock.now += 19
    assert kept.recall(KEY) == "refused"
    clock.now += 1
    assert kept.recall(KEY) is None


def test_a_window_of_zero_keeps_nothing_of_that_kind(clock: Clock, wall: Clock) -> None:
    only_refusals = store(0, 60, clock, wall)
    only_refusals.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    assert only_refusals.recall(KEY) is None
    only_acceptances = store(60, 0, clock, wall)
    only_acceptances.keep(KEY, "refused", accepted=False)
    assert only_acceptances.recall(KEY) is None


def test_a_newer_refusal_replaces_an_older_acceptance_even_with_refusals_off(clock: Clock, wall: Clock) -> None:
    kept = store(300, 0, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    kept.keep(KEY, "refused", accepted=False)  # revoked: its Pod was deleted
    assert kept.recall(KEY) is None


def test_a_newer_acceptance_opens_a_new_window(clock: Clock, wall: Clock) -> None:
    kept = store(300, 0, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    clock.now += 200
    kept.keep(KEY, "accepted again", accepted=True, expires_at=wall.now + 3600)
    clock.now += 200
    assert kept.recall(KEY) == "accepted again"


def test_the_verdicts_kept_are_bounded(clock: Clock, wall: Clock) -> None:
    kept: StaleVerdicts[str] = StaleVerdicts(StaleIfError(0, 60), maxsize=2, clock=clock, wall_clock=wall)
    for key in (b"a", b"b", b"c"):
        kept.keep(key, "refused", accepted=False)
    assert len(kept) == 2
    assert kept.recall(b"a") is None


@pytest.mark.parametrize("value", [-1, 24 * 3600 + 1, float("nan"), float("inf"), True, "60"])
def test_a_window_that_cannot_work_is_refused_naming_the_setting(value: object) -> None:
    with pytest.raises(ConfigError, match="stale_if_error accepted_for"):
        StaleIfError(accepted_for=value)  # type: ignore[arg-type]


def test_forget_drops_what_was_kept(clock: Clock, wall: Clock) -> None:
    kept = store(300, 60, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    kept.forget(KEY)
    assert kept.recall(KEY) is None


def test_nothing_is_recalled_when_the_reviewers_own_credentials_are_refused(clock: Clock, wall: Clock) -> None:
    kept = store(300, 300, clock, wall)
    kept.keep(KEY, "accepted", accepted=True, expires_at=wall.now + 3600)
    assert kept.recall(KEY, cause="http_401") is None
    assert kept.recall(KEY, cause="http_403") is None
    assert kept.recall(KEY, cause="http_503") == "accepted", "an outage proper is what the window is for"
    assert kept.recall(KEY, cause="timeout") == "accepted"
