"""Who a token belongs to, and the allow rule both verifiers share."""

import pytest

from audience_token import AllowList, ConfigError, Identity
from audience_token.identity import AllowPattern, parse_service_account_username


@pytest.mark.parametrize("allow", [[], (), None])
def test_an_empty_allow_list_is_refused_saying_how_to_accept_everyone(allow: object) -> None:
    with pytest.raises(ConfigError, match=r"\*/\*"):
        AllowList.parse(allow)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pattern",
    ["api", "api/api/x", "/api", "api/", "API/api", "api/Api", "a*/api", "api/a*", "ns_1/api", "-a/b", "", "*"],
)
def test_a_pattern_that_is_not_namespace_slash_serviceaccount_is_refused_naming_it(pattern: str) -> None:
    with pytest.raises(ConfigError, match="allow pattern"):
        AllowList.parse([pattern])


def test_a_non_string_pattern_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        AllowList.parse([42])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("patterns", "namespace", "name", "allowed"),
    [
        (["api/api"], "api", "api", True),
        (["api/api"], "api", "other", False),
        (["api/api"], "other", "api", False),
        (["api/*"], "api", "anything", True),
        (["api/*"], "apis", "anything", False),
        (["*/reporter"], "team-a", "reporter", True),
        (["*/reporter"], "team-a", "reporter2", False),
        (["*/*"], "any", "one", True),
        (["a/b", "c/*"], "c", "d", True),
        (["a/b.c"], "a", "b.c", True),
    ],
)
def test_allow_matches_whole_parts_with_star_per_part(
    patterns: list[str], namespace: str, name: str, allowed: bool
) -> None:
    assert AllowList.parse(patterns).allows(Identity(namespace=namespace, service_account=name)) is allowed


def test_one_string_is_one_pattern_not_a_list_of_characters() -> None:
    assert AllowList.parse("api/api").patterns == (AllowPattern("api", "api"),)


@pytest.mark.parametrize(
    ("username", "parsed"),
    [
        ("system:serviceaccount:api:api", ("api", "api")),
        ("system:serviceaccount:kube-system:a.b-c", ("kube-system", "a.b-c")),
        ("system:serviceaccount:api", None),
        ("system:serviceaccount:api:a:b", None),
        ("system:serviceaccount::api", None),
        ("system:serviceaccount:API:api", None),
        ("system:node:worker-1", None),
        ("alice@example.com", None),
        ("system:serviceaccounts:api", None),
        ("", None),
    ],
)
def test_only_system_serviceaccount_ns_name_is_a_service_account(username: str, parsed: object) -> None:
    assert parse_service_account_username(username) == parsed


def test_the_identity_takes_the_pod_and_node_from_the_reviews_extra() -> None:
    identity = Identity.from_user_info(
        {
            "username": "system:serviceaccount:api:api",
            "uid": "sa-uid",
            "groups": ["system:serviceaccounts", 7],
            "extra": {
                "authentication.kubernetes.io/pod-name": ["api-1"],
                "authentication.kubernetes.io/pod-uid": ["pod-uid"],
                "authentication.kubernetes.io/node-name": ["node-1"],
                "authentication.kubernetes.io/credential-id": ["JTI=abc"],
                "weird": "not a list",
            },
        }
    )
    assert identity is not None
    assert (identity.namespace, identity.service_account, identity.uid) == ("api", "api", "sa-uid")
    assert (identity.pod_name, identity.pod_uid, identity.node_name) == ("api-1", "pod-uid", "node-1")
    assert identity.credential_id == "JTI=abc"
    assert identity.username == "system:serviceaccount:api:api"
    assert identity.groups == ("system:serviceaccounts",)
    assert "weird" not in identity.extra
    assert str(identity) == "api/api (pod api/api-1)"
    assert {identity: "usable as a key"}[identity]


def test_a_user_that_is_not_a_service_account_has_no_identity() -> None:
    assert Identity.from_user_info({"username": "system:node:n1"}) is None
    assert Identity.from_user_info({"username": 5}) is None
