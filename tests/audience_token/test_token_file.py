"""``TokenFile`` through a real kubelet-style projected volume: symlinked ``..data``, atomic swaps."""

import logging
import os
import secrets
from pathlib import Path

import pytest

from audience_token.errors import TokenFileError
from audience_token.token_file import ENV_VAR, MAX_AGE_SECONDS, TokenFile
from tests.audience_token.conftest import Clock
from tests.audience_token.kubelet_volume import ProjectedVolume


def fake_token() -> str:
    """Three base64url parts like a JWT; the file layer does not care what they say."""
    return ".".join(secrets.token_urlsafe(24) for _ in range(3))


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def first() -> str:
    return fake_token()


@pytest.fixture
def volume(tmp_path: Path, first: str) -> ProjectedVolume:
    return ProjectedVolume.create(tmp_path / "tokens", {"token": first})


def test_the_token_is_read_through_the_kubelets_symlinks(volume: ProjectedVolume, first: str) -> None:
    assert volume.path("token").is_symlink()
    assert os.readlink(volume.path("token")) == "..data/token"
    assert TokenFile(volume.path("token")).read() == first


def test_a_kubelet_rotation_is_seen_once_the_check_interval_has_passed(
    volume: ProjectedVolume, first: str, clock: Clock
) -> None:
    tokens = TokenFile(volume.path("token"), clock=clock)
    assert tokens.read() == first
    second = fake_token()
    old_dir = volume.data_dir
    volume.rotate({"token": second})
    assert not old_dir.exists(), "the kubelet removes the old timestamped directory"
    assert tokens.read() == first, "within the check interval the token comes from memory"
    clock.now += 1.0
    assert tokens.read() == second


def test_the_file_is_read_again_every_minute_even_when_its_stat_did_not_change(
    volume: ProjectedVolume, first: str, clock: Clock
) -> None:
    tokens = TokenFile(volume.path("token"), clock=clock)
    assert tokens.read() == first
    target = volume.data_dir / "token"
    before = target.stat()
    second = fake_token()
    assert len(second) == len(first)
    with open(target, "r+") as handle:  # same inode, same size, and the mtime put back below
        handle.write(second)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_ino == before.st_ino
    clock.now += MAX_AGE_SECONDS / 2
    assert tokens.read() == first, "unchanged stat and younger than a minute: no read"
    clock.now += MAX_AGE_SECONDS / 2 + 1
    assert tokens.read() == second


def test_no_file_handle_is_kept_open(volume: ProjectedVolume, clock: Clock) -> None:
    descriptors = set(os.listdir("/proc/self/fd"))
    tokens = TokenFile(volume.path("token"), clock=clock)
    for _ in range(3):
        tokens.read()
        volume.rotate({"token": fake_token()})
        clock.now += 2
    assert set(os.listdir("/proc/self/fd")) <= descriptors


def test_invalidate_makes_the_next_read_open_the_file_at_once(
    volume: ProjectedVolume, first: str, clock: Clock
) -> None:
    tokens = TokenFile(volume.path("token"), clock=clock)
    assert tokens.read() == first
    second = fake_token()
    volume.rotate({"token": second})
    tokens.invalidate()
    assert tokens.read() == second


def test_a_failed_re_read_keeps_the_last_good_token_and_warns_once_without_the_token(
    volume: ProjectedVolume, first: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="audience_token")
    tokens = TokenFile(volume.path("token"), clock=clock)
    assert tokens.read() == first
    volume.break_data_link()
    for _ in range(5):
        clock.now += 61
        assert tokens.read() == first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(volume.path("token")) in warnings[0].getMessage()
    assert "does not exist" in warnings[0].getMessage()
    assert first not in caplog.text


def test_an_empty_file_keeps_the_last_good_token(
    volume: ProjectedVolume, first: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenFile(volume.path("token"), clock=clock)
    assert tokens.read() == first
    volume.rotate({"token": ""})
    clock.now += 1
    assert tokens.read() == first
    assert "empty" in caplog.text


def test_after_recovering_a_new_failure_warns_again(
    volume: ProjectedVolume, first: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenFile(volume.path("token"), clock=clock)
    tokens.read()
    volume.rotate({"token": ""})
    clock.now += 1
    tokens.read()
    second = fake_token()
    volume.rotate({"token": second})
    clock.now += 1
    assert tokens.read() == second
    volume.rotate({"token": "  \n"})
    clock.now += 1
    assert tokens.read() == second
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_trailing_whitespace_is_not_part_of_the_token(tmp_path: Path, first: str) -> None:
    volume = ProjectedVolume.create(tmp_path / "tokens", {"token": first + "\n"})
    assert TokenFile(volume.path("token")).read() == first


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "empty"),
        ("two\nlines", "characters a token never has"),
        ("jeton-é", "characters a token never has"),
        (b"\x00\x01\x02", "characters a token never has"),
        ("x" * (64 * 1024 + 1), "larger than"),
    ],
)
def test_a_file_that_never_held_a_token_raises_naming_the_path_the_variable_and_the_annotation(
    tmp_path: Path, content: str | bytes, why: str
) -> None:
    volume = ProjectedVolume.create(tmp_path / "tokens", {"token": content})
    with pytest.raises(TokenFileError) as raised:
        TokenFile(volume.path("token")).read()
    message = str(raised.value)
    assert str(volume.path("token")) in message
    assert ENV_VAR in message
    assert "token-projector.io/audience" in message
    assert why in message
    if isinstance(content, str) and content:
        assert content not in message


def test_a_missing_file_raises_saying_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="does not exist"):
        TokenFile(tmp_path / "nothing-here").read()


def test_a_directory_is_not_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="directory"):
        TokenFile(tmp_path).read()


def test_the_path_defaults_to_the_variable_read_once_at_construction(
    volume: ProjectedVolume, first: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(volume.path("token")))
    tokens = TokenFile()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert tokens.path == volume.path("token")
    assert tokens.read() == first


def test_without_a_path_or_the_variable_construction_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(TokenFileError) as raised:
        TokenFile()
    assert ENV_VAR in str(raised.value)
    assert "token-projector.io/audience" in str(raised.value)


def test_the_variable_is_the_one_the_webhook_sets_by_default() -> None:
    try:
        from webhook.core.contract import Contract
    except ImportError:  # before the webhook's restructure
        from webhook.settings import Contract  # type: ignore[import-not-found,no-redef]
    assert Contract().env_var == ENV_VAR


def test_headers_are_a_bearer_authorization(volume: ProjectedVolume, first: str) -> None:
    assert TokenFile(volume.path("token")).headers() == {"Authorization": f"Bearer {first}"}


def test_the_repr_shows_the_path_and_never_the_token(volume: ProjectedVolume, first: str) -> None:
    tokens = TokenFile(volume.path("token"))
    tokens.read()
    assert str(volume.path("token")) in repr(tokens)
    assert first not in repr(tokens)
