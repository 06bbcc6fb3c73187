"""The package's public names: everything in __all__ resolves; the caller side and offline mode load lazily."""

import subprocess
import sys
from pathlib import Path

import pytest

import audience_token

REPO = Path(__file__).parents[2]


def test_every_public_name_resolves() -> None:
    for name in audience_token.__all__:
        assert getattr(audience_token, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = audience_token.Nope


def test_the_lazy_names_are_the_modules_own_objects() -> None:
    from audience_token.client import bearer_auth
    from audience_token.token_file import TokenFile

    assert audience_token.TokenFile is TokenFile
    assert audience_token.bearer_auth is bearer_auth


def test_the_offline_verifier_is_imported_only_when_asked_for() -> None:
    code = (
        "import sys, audience_token; before = 'audience_token.offline' in sys.modules;"
        "audience_token.OfflineVerifier; print(before, 'audience_token.offline' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.split() == ["False", "True"]
