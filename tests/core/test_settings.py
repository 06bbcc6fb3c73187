"""Settings: defined once, validated at start-up, the same in ``--help`` and the README."""

from pathlib import Path

import pytest

from webhook.cli import main
from webhook.cli.options import load, settings_table
from webhook.core.contract import Contract
from webhook.errors import ConfigError
from webhook.server.settings import ServerSettings

README = Path(__file__).parents[2] / "README.md"


def test_defaults_are_the_documented_contract() -> None:
    c = Contract()
    assert (c.annotation("audience"), c.volume_name, c.mount_path, c.env_var, c.token_path) == (
        "token-projector.io/audience",
        "audience-token",
        "/var/run/secrets/token-projector.io/tokens",
        "SERVICE_ACCOUNT_TOKEN_PATH",
        "/var/run/secrets/token-projector.io/tokens/token",
    )
    assert (c.default_expiration_seconds, c.max_expiration_seconds) == (3600, 86400)
    assert (c.legacy_token_policy, c.legacy_token_scope, c.strict) == ("deny", "annotated", False)


def test_the_environment_is_read_with_the_token_projector_prefix() -> None:
    env = {
        "TOKEN_PROJECTOR_STRICT": "true",
        "TOKEN_PROJECTOR_DENIED_AUDIENCES": "a, b,,",
        "TOKEN_PROJECTOR_MAX_EXPIRATION_SECONDS": "7200",
    }
    c = load(Contract, environ=env)
    assert (c.strict, c.denied_audiences, c.max_expiration_seconds) == (True, ("a", "b"), 7200)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOKEN_PROJECTOR_STRICT": "maybe"}, "--strict / TOKEN_PROJECTOR_STRICT"),
        ({"TOKEN_PROJECTOR_LEGACY_TOKEN_POLICY": "block"}, "one of deny, warn, off"),
        ({"TOKEN_PROJECTOR_DEFAULT_EXPIRATION_SECONDS": "60"}, "--default-expiration-seconds"),
        ({"TOKEN_PROJECTOR_MAX_EXPIRATION_SECONDS": "lots"}, "must be a whole number"),
        ({"TOKEN_PROJECTOR_VOLUME_NAME": "Audience_Token"}, "a DNS label"),
        ({"TOKEN_PROJECTOR_MOUNT_PATH": "relative/path"}, "an absolute path"),
        ({"TOKEN_PROJECTOR_ENV_VAR": "1TOKEN"}, "environment variable name"),
        ({"TOKEN_PROJECTOR_TOKEN_FILE": "../escape"}, "relative path without '..'"),
        ({"TOKEN_PROJECTOR_ANNOTATION_PREFIX": "Not A Domain"}, "DNS subdomain"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_at_start_up_naming_flag_and_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load(Contract, environ=env)


@pytest.mark.parametrize(
    "env",
    [
        {"TOKEN_PROJECTOR_PORT": "0"},
        {"TOKEN_PROJECTOR_PROBE_PORT": "8443"},
        {"TOKEN_PROJECTOR_MAX_BODY_BYTES": "10"},
        {"TOKEN_PROJECTOR_READ_TIMEOUT_SECONDS": "0"},
        {"TOKEN_PROJECTOR_LOG_LEVEL": "loud"},
    ],
)
def test_server_settings_that_cannot_work_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load(ServerSettings, environ=env)


def test_help_shows_every_setting_with_its_default_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    # argparse may wrap a line after a hyphen (token-projector.io): joined back here.
    flat = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    for flag, env, default in [
        ("--volume-name", "TOKEN_PROJECTOR_VOLUME_NAME", "audience-token"),
        ("--mount-path", "TOKEN_PROJECTOR_MOUNT_PATH", "/var/run/secrets/token-projector.io/tokens"),
        ("--env-var", "TOKEN_PROJECTOR_ENV_VAR", "SERVICE_ACCOUNT_TOKEN_PATH"),
        ("--port", "TOKEN_PROJECTOR_PORT", "8443"),
        ("--allowed-audiences", "TOKEN_PROJECTOR_ALLOWED_AUDIENCES", "none"),
    ]:
        assert f"{flag} " in flat
        assert f"(default: {default}; env {env})" in flat


@pytest.mark.parametrize("cls", [Contract, ServerSettings])
def test_the_readme_shows_the_settings_table_generated_from_the_code(
    cls: type[Contract] | type[ServerSettings],
) -> None:
    assert settings_table(cls) in README.read_text(), (
        f"README.md's {cls.__name__} table is out of date; regenerate it with "
        f"python -c 'from webhook.cli.options import *; print(settings_table({cls.__name__}))'"
    )
