"""Per-route caller rules: names or service-account groups, by method and path, first match decides."""

import pytest

from audience_token import ConfigError, Identity
from audience_token.rules import CallerRule, RouteRules


def identity(namespace: str, name: str) -> Identity:
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")
    return Identity(namespace, name, groups=groups)


def test_a_namespace_group_admits_every_account_of_that_namespace_only() -> None:
    rule = CallerRule.parse("system:serviceaccounts:ops")
    assert rule.allows(identity("ops", "janitor"))
    assert not rule.allows(identity("api", "janitor"))


def test_the_group_of_all_service_accounts_admits_any() -> None:
    assert CallerRule.parse(["system:serviceaccounts"]).allows(identity("x", "y"))


def test_names_and_groups_combine_as_alternatives() -> None:
    rule = CallerRule.parse(["api/writer", "system:serviceaccounts:ops"])
    assert rule.allows(identity("api", "writer"))
    assert rule.allows(identity("ops", "a"))
    assert not rule.allows(identity("api", "reader"))


def test_a_group_is_matched_only_as_the_api_server_reported_it() -> None:
    assert not CallerRule.parse("system:serviceaccounts:ops").allows(Identity("ops", "janitor"))


@pytest.mark.parametrize(
    "bad", ["system:serviceaccounts:", "system:serviceaccounts:Ops", "system:serviceaccountsx", "api", []]
)
def test_a_malformed_rule_is_a_config_error(bad: str | list[str]) -> None:
    with pytest.raises(ConfigError):
        CallerRule.parse(bad)


def test_route_rules_match_method_and_exact_or_prefix_path_first_match_deciding() -> None:
    rules = RouteRules(
        {
            "DELETE /secrets/*": ["system:serviceaccounts:ops"],
            "* /secrets/*": ["api/*", "ops/*"],
            "get /reports": "api/reports",
        }
    )
    assert rules.allows(identity("ops", "a"), "DELETE", "/secrets/db")
    assert not rules.allows(identity("api", "api"), "DELETE", "/secrets/db")
    assert rules.allows(identity("api", "api"), "GET", "/secrets/db")
    assert not rules.allows(identity("api", "api"), "GET", "/reports")
    assert rules.allows(identity("api", "api"), "GET", "/reports/more"), "exact path: another route is not ruled"
    assert rules.allows(identity("anyone", "x"), "GET", "/elsewhere")


@pytest.mark.parametrize("key", ["/secrets", "FETCH /x", "GET secrets", "GET /a%2Fb"])
def test_a_malformed_route_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="METHOD /path"):
        RouteRules({key: "api/*"})


def test_a_get_rule_governs_head_too_since_frameworks_answer_head_with_the_get_handler() -> None:
    rules = RouteRules({"GET /admin/*": "ops/*", "GET /report": "ops/*"})
    assert rules.refuses(identity("api", "api"), "HEAD", "/admin/users") == "GET /admin/*"
    assert rules.refuses(identity("api", "api"), "HEAD", "/report") == "GET /report"
    assert rules.allows(identity("ops", "a"), "HEAD", "/admin/users")
    assert rules.allows(identity("api", "api"), "POST", "/admin/users"), "GET governs HEAD only, not other methods"


def test_a_prefix_rule_covers_the_bare_prefix_itself_but_not_a_longer_name() -> None:
    rules = RouteRules({"* /admin/*": "ops/*"})
    assert rules.refuses(identity("api", "api"), "GET", "/admin") == "* /admin/*"
    assert rules.refuses(identity("api", "api"), "DELETE", "/admin/") == "* /admin/*"
    assert rules.allows(identity("api", "api"), "GET", "/administrators"), "another route is not ruled"
    assert rules.allows(identity("api", "api"), "GET", "/"), "'/*' of '/admin/*' is not '/'"
