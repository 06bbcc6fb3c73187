"""``TokenFile(audience=...)`` finds each audience's token by the webhook's file rule, restated and held equal."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_token import TokenFile, TokenFileError
from audience_token.token_file import DIR_ENV_VAR, ENV_VAR, audience_file_name
from webhook.core.contract import Contract
from webhook.core.contract import audience_file_name as webhook_rule


@given(st.text(min_size=1, max_size=60))
def test_the_library_names_every_audiences_file_exactly_as_the_webhook_does(audience: str) -> None:
    assert audience_file_name(audience) == webhook_rule(audience)


def test_the_variables_are_the_webhooks_defaults() -> None:
    assert (Contract().env_var, Contract().dir_env_var) == (ENV_VAR, DIR_ENV_VAR)


def test_in_a_pod_with_several_audiences_each_audience_reads_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("primary.token.x")
    (tmp_path / "data-store").write_text("primary.token.x")
    (tmp_path / "https%3A%2F%2Fvault.example.com").write_text("vault.token.y")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "token"))
    monkeypatch.setenv(DIR_ENV_VAR, str(tmp_path))
    assert TokenFile(audience="https://vault.example.com").read() == "vault.token.y"
    assert TokenFile(audience="data-store").read() == "primary.token.x"


def test_in_a_pod_with_one_audience_the_audience_reads_the_one_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("only.token.z")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "token"))
    monkeypatch.delenv(DIR_ENV_VAR, raising=False)
    assert TokenFile(audience="data-store").read() == "only.token.z"


def test_an_audience_the_pod_was_not_given_names_the_file_it_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIR_ENV_VAR, str(tmp_path))
    with pytest.raises(TokenFileError, match=r"secret-store.*\$SERVICE_ACCOUNT_TOKEN_DIR"):
        TokenFile(audience="secret-store").read()


def test_a_path_and_an_audience_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="not both"):
        TokenFile(tmp_path / "token", audience="data-store")
