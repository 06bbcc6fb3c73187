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


def test_the_offline_extra_requires_a_pyjwt_whose_issuer_check_is_exact() -> None:
    # PyJWT 2.10.0 compared a string issuer with `in` (CVE-2024-53861): a cluster-signed token whose
    # `iss` is "https://kubernetes.default.svc" passed for "https://kubernetes.default.svc.cluster.local".
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "audience_token" / "pyproject.toml").read_text())["project"]
    for listed in project["optional-dependencies"]["offline"]:
        requirement = Requirement(listed)
        if requirement.name.lower() == "pyjwt":
            assert not requirement.specifier.contains(Version("2.10.0")), listed
            assert requirement.specifier.contains(Version("2.10.1")), listed
            break
    else:
        pytest.fail("the offline extra does not list PyJWT")


def test_the_audience_annotation_is_spelled_once_in_the_library_and_is_the_webhooks_default() -> None:
    from audience_token.identity import AUDIENCE_ANNOTATION
    from webhook.core.contract import AUDIENCE_KEY, Contract

    assert Contract().annotation(AUDIENCE_KEY) == AUDIENCE_ANNOTATION
    modules = sorted((REPO / "audience_token").glob("*.py"))
    spelled = {path.name: path.read_text().count(AUDIENCE_ANNOTATION) for path in modules}
    assert {name: count for name, count in spelled.items() if count} == {"identity.py": 1}
