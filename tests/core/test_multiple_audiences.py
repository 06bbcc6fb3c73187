"""A Pod that lists several audiences gets one token file per audience, found from the audience alone."""

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import (
    DEFAULT,
    TOKEN_MOUNT,
    admission_review,
    annotated,
    container,
    denial,
    fixture,
    make_pod,
    ops_of,
    patched,
    run,
)
from webhook.cli import main
from webhook.cli.options import load
from webhook.core.contract import Contract, audience_file_name
from webhook.core.wire import Json
from webhook.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs" / "multiple-audiences.md"
KEY = "token-projector.io/audience"
PATH_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": "/var/run/secrets/token-projector.io/tokens/token"}
DIR_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_DIR", "value": "/var/run/secrets/token-projector.io/tokens"}


def source(audience: str, path: str, expiration: int = 3600) -> Json:
    return {"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration, "path": path}}


TWO_SOURCES = [
    source("data-store", "token"),
    source("data-store", "data-store"),
    source("secret-store", "secret-store"),
]
TWO = {"name": "audience-token", "projected": {"sources": TWO_SOURCES}}


def two(*containers: Json, **more: str) -> Json:
    return admission_review(make_pod(*containers, annotations=annotated("data-store, secret-store", **more)))


def asking(value: str) -> Json:
    """The review of a one-container Pod whose audience annotation is ``value``."""
    return admission_review(make_pod(annotations=annotated(value)))


def refusal(value: str, contract: Contract = DEFAULT) -> str:
    """The message of the denial of a Pod whose audience annotation is ``value``."""
    message: str = denial(asking(value), contract)["message"]
    return message


def sources_of(pod: Json) -> list[Json]:
    sources: list[Json] = pod["spec"]["volumes"][0]["projected"]["sources"]
    return sources


# The file rule.


def docs_examples() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", DOCS.read_text(), flags=re.MULTILINE)
    assert len(rows) >= 8, "docs/multiple-audiences.md shows the rule's examples as | `audience` | `file name` |"
    return rows


def test_the_file_rule_gives_exactly_the_names_the_docs_show() -> None:
    for audience, name in docs_examples():
        assert audience_file_name(audience) == name, audience


@pytest.mark.parametrize(
    ("audience", "name"),
    [
        ("data-store", "data-store"),
        ("a.b_c-d0", "a.b_c-d0"),
        ("https://vault.example.com:8200/v1", "https%3A%2F%2Fvault.example.com%3A8200%2Fv1"),
        ("Vault", "%56ault"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("é", "%C3%A9"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("..data", "%2E.data"),
        (".a.b.", "%2Ea.b%2E"),
    ],
)
def test_an_audience_is_its_file_name_with_every_other_byte_and_an_outer_dot_percent_encoded(
    audience: str, name: str
) -> None:
    assert audience_file_name(audience) == name


@given(st.text(min_size=1))
def test_a_file_name_decodes_back_to_its_audience_and_is_safe_for_any_file_system(audience: str) -> None:
    name = audience_file_name(audience)
    assert unquote(name, errors="surrogatepass") == audience, "injective: the name gives the audience back"
    assert re.fullmatch(r"(?:[a-z0-9_.-]|%[0-9A-F]{2})+", name), "upper case only in escapes, no '/'"
    assert not name.startswith(".")
    assert not name.endswith(".")


@given(st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True))
def test_distinct_audiences_have_distinct_file_names_even_ignoring_case(audiences: list[str]) -> None:
    names = [audience_file_name(a).casefold() for a in audiences]
    assert len(set(names)) == len(names)


# The patch.


def test_a_list_gets_one_volume_with_a_source_per_audience_and_the_primary_also_at_the_token_path() -> None:
    pod = patched(two())
    assert pod["spec"]["volumes"] == [TWO]
    c = pod["spec"]["containers"][0]
    assert c["volumeMounts"] == [TOKEN_MOUNT], "one volume, mounted once"
    assert c["env"] == [PATH_ENV, DIR_ENV]


def test_every_audiences_file_is_found_from_its_audience_alone_by_the_rule() -> None:
    contract = Contract()
    audiences = ["data-store", "https://secret-store.example.com", "Ledger"]
    pod = patched(asking(", ".join(audiences)))
    files = {
        f"{contract.mount_path}/{s['serviceAccountToken']['path']}": s["serviceAccountToken"]["audience"]
        for s in sources_of(pod)
    }
    for audience in audiences:
        assert files[contract.audience_token_path(audience)] == audience
    assert files[contract.token_path] == "data-store", "the first audience is the primary"


@pytest.mark.parametrize("separator", [",", ", ", ",   ", ",\t", ",\n  "])
def test_white_space_after_a_comma_is_allowed(separator: str) -> None:
    pod = patched(asking(f"data-store{separator}secret-store"))
    assert pod["spec"]["volumes"] == [TWO]


def test_the_pods_order_decides_the_primary() -> None:
    assert sources_of(patched(asking("secret-store, data-store")))[0] == source("secret-store", "token")


def test_every_token_gets_the_pods_expiration() -> None:
    pod = patched(two(expiration_seconds="7200"))
    assert {s["serviceAccountToken"]["expirationSeconds"] for s in sources_of(pod)} == {7200}


def test_an_audience_named_like_the_token_file_may_be_the_primary_and_then_has_one_file() -> None:
    pod = patched(asking("token, data-store"))
    assert sources_of(pod) == [
        source("token", "token"),
        source("data-store", "data-store"),
    ]


def test_the_audit_annotation_lists_every_audience() -> None:
    audit = run(two()).response["response"]["auditAnnotations"]
    assert audit == {
        "injected": "volume=audience-token audience=data-store,secret-store expirationSeconds=3600 containers=app"
    }


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_both_admission_versions_get_the_same_patch(api_version: str) -> None:
    body = two()
    body["apiVersion"] = api_version
    assert ops_of(run(body)) == ops_of(run(two()))


def test_the_names_come_from_the_contract() -> None:
    contract = Contract(mount_path="/run/tok/", token_file="jwt", env_var="TOKEN_FILE", dir_env_var="TOKEN_DIR")
    pod = patched(asking("a, b"), contract)
    assert sources_of(pod) == [source("a", "jwt"), source("a", "a"), source("b", "b")]
    assert pod["spec"]["containers"][0]["env"] == [
        {"name": "TOKEN_FILE", "value": "/run/tok/jwt"},
        {"name": "TOKEN_DIR", "value": "/run/tok"},
    ]


# Denials: each names the annotation and the value.


@pytest.mark.parametrize("value", ["a,,b", "a,", ",a", ",", "a, ,b"])
def test_an_empty_element_is_denied(value: str) -> None:
    status = denial(asking(value))
    assert status["code"] == 422
    assert f"annotation {KEY} is {value!r}" in status["message"]
    assert "is empty" in status["message"]


@pytest.mark.parametrize(
    ("value", "fixed"), [("a ,b", "'a, b'"), ("a, b ", "'a, b'"), (" a, b", "'a, b'"), ("a\t, b", "'a, b'")]
)
def test_white_space_before_a_comma_or_at_an_end_is_denied_with_the_fixed_list_suggested(
    value: str, fixed: str
) -> None:
    message = refusal(value)
    assert f"annotation {KEY} is {value!r}" in message
    assert f"use {fixed}" in message


def test_a_duplicate_audience_is_denied_naming_it() -> None:
    message = refusal("a, b, a")
    assert f"annotation {KEY} is 'a, b, a'" in message
    assert "'a' is listed twice" in message


def test_more_audiences_than_the_maximum_are_denied_and_the_maximum_is_configurable() -> None:
    nine = ", ".join(f"svc-{i}" for i in range(9))
    message = refusal(nine)
    assert "a list of 9 audiences" in message
    assert "at most 8" in message
    assert patched(asking(nine.rsplit(", ", 1)[0]))
    assert "at most 2" in refusal("a, b, c", Contract(max_audiences=2))


def test_a_huge_list_is_denied_by_its_length_with_a_short_message() -> None:
    message = refusal(",".join(["a"] * 100_000))
    assert "a list of 100000 audiences" in message
    assert len(message) < 500


@pytest.mark.parametrize("api", Contract().denied_audiences)
def test_an_api_server_audience_anywhere_in_the_list_is_denied(api: str) -> None:
    message = refusal(f"data-store, {api}")
    assert f"audience 2, {api!r}, is an audience of the Kubernetes API server" in message


def test_an_audience_whose_file_would_be_the_primarys_is_denied_and_told_to_list_it_first() -> None:
    message = refusal("data-store, token")
    assert f"annotation {KEY} is 'data-store, token'" in message
    assert "would collide in /var/run/secrets/token-projector.io/tokens" in message
    assert "list 'token' first" in message


def test_files_that_differ_only_in_case_collide_because_some_file_systems_ignore_case() -> None:
    assert "would collide" in refusal("data-store, token", Contract(token_file="TOKEN"))


@pytest.mark.parametrize("value", ["a, sub", "sub, a"])
def test_an_audience_named_like_the_token_files_directory_collides_with_it(value: str) -> None:
    message = refusal(value, Contract(token_file="sub/token"))
    assert "a file and a directory cannot have one name" in message


def test_an_audience_too_long_for_the_kubelets_file_names_is_denied_in_a_list_only() -> None:
    assert patched(asking("a, " + "b" * 255))
    message = refusal("a, " + "b" * 256)
    assert "would be 256 bytes" in message
    assert "at most 255" in message
    assert len(message) < 600
    assert "would be 258 bytes" in refusal("a, " + "é" * 43)
    assert patched(asking("é" * 300)), "one audience: as it always was"


def test_with_allowed_audiences_an_audience_of_a_list_outside_them_is_denied_listing_what_is_allowed() -> None:
    contract = Contract(allowed_audiences=("data-store", "*.example.com"))
    message = denial(asking("data-store, secret-stor"), contract)["message"]
    assert "audience 2, 'secret-stor', is not an audience this cluster allows" in message
    assert "allowed: data-store, *.example.com (glob patterns)" in message
    assert patched(asking("data-store, vault.example.com"), contract)


# Settings.


def test_the_new_settings_are_read_from_the_environment() -> None:
    env = {"TOKEN_PROJECTOR_ALLOWED_AUDIENCES": "data-store, *.example.com", "TOKEN_PROJECTOR_MAX_AUDIENCES": "3"}
    contract = load(Contract, environ=env)
    assert (contract.allowed_audiences, contract.max_audiences) == (("data-store", "*.example.com"), 3)
    assert (Contract().allowed_audiences, Contract().max_audiences, Contract().dir_env_var) == (
        (),
        8,
        "SERVICE_ACCOUNT_TOKEN_DIR",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOKEN_PROJECTOR_MAX_AUDIENCES": "0"}, "--max-audiences / TOKEN_PROJECTOR_MAX_AUDIENCES"),
        ({"TOKEN_PROJECTOR_DIR_ENV_VAR": "SERVICE_ACCOUNT_TOKEN_PATH"}, "other than env_var"),
        ({"TOKEN_PROJECTOR_DIR_ENV_VAR": "1DIR"}, "--dir-env-var"),
    ],
)
def test_a_new_setting_that_cannot_work_is_refused_at_start_up(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load(Contract, environ=env)


# Idempotence, conflicts and the rules that hold for one audience.


def test_an_already_patched_pod_with_api_server_defaults_yields_no_patch() -> None:
    pod = patched(two(container("app"), container("side")))
    pod["spec"]["volumes"][0]["projected"]["defaultMode"] = 420
    for s in sources_of(pod):
        del s["serviceAccountToken"]["expirationSeconds"]  # the API server's default of an hour
    again = run(admission_review(pod))
    assert "patch" not in again.response["response"]
    assert "warnings" not in again.response["response"]
    assert again.outcome == "unchanged"


def test_a_container_another_webhook_added_since_is_the_only_one_patched() -> None:
    pod = patched(two())
    pod["spec"]["containers"].append(container("sidecar", env=[{"name": "A", "value": "1"}]))
    assert [op["path"] for op in ops_of(run(admission_review(pod)))] == [
        "/spec/containers/1/volumeMounts",
        "/spec/containers/1/env/0",
        "/spec/containers/1/env/1",
    ]
    final = patched(admission_review(pod))
    assert [v["name"] for v in final["spec"]["volumes"]] == ["audience-token"]
    assert final["spec"]["containers"][1]["env"] == [PATH_ENV, DIR_ENV, {"name": "A", "value": "1"}]


def test_our_volume_name_with_other_sources_is_denied_naming_every_audience() -> None:
    one = {"name": "audience-token", "projected": {"sources": [source("data-store", "token")]}}
    message = denial(admission_review(make_pod(annotations=annotated("data-store, secret-store"), volumes=[one])))[
        "message"
    ]
    assert "not the projected token volume for 'data-store', 'secret-store'" in message
    assert "rename" in message


@pytest.mark.parametrize(
    ("own", "added"), [(PATH_ENV | {"value": "/custom"}, DIR_ENV), (DIR_ENV | {"value": "/custom"}, PATH_ENV)]
)
def test_a_container_that_sets_one_of_the_variables_keeps_its_value_gets_the_other_and_is_warned(
    own: Json, added: Json
) -> None:
    body = two(container("app", env=[own]))
    warnings = run(body).response["response"]["warnings"]
    assert len(warnings) == 1
    assert own["name"] in warnings[0]
    assert "/custom" not in warnings[0], "env values never appear in messages"
    assert patched(body)["spec"]["containers"][0]["env"] == [added, own]


def test_skipped_containers_get_nothing_and_a_mount_conflict_is_still_denied() -> None:
    pod = patched(two(container("app"), container("proxy"), skip_containers="proxy"))
    assert "env" not in pod["spec"]["containers"][1]
    other = container(
        "app", volumeMounts=[{"name": "creds", "mountPath": "/var/run/secrets/token-projector.io/tokens"}]
    )
    body = admission_review(make_pod(other, annotations=annotated("a, b"), volumes=[{"name": "creds", "emptyDir": {}}]))
    assert "token-projector.io/skip-containers: app" in denial(body)["message"]


def test_a_legacy_token_is_denied_and_the_message_says_where_every_token_will_be() -> None:
    body = fixture("legacy-token-pod-annotated.json")
    body["request"]["object"]["metadata"]["annotations"][KEY] = "data-store, secret-store"
    message = denial(body)["message"]
    assert "Pod uses a legacy service account token" in message
    assert "its tokens for 'data-store', 'secret-store' in /var/run/secrets/token-projector.io/tokens" in message
    warned = run(body, Contract(legacy_token_policy="warn")).response["response"]
    assert warned["allowed"] is True
    assert "legacy-token" in warned["auditAnnotations"]
    assert "audience=data-store,secret-store" in warned["auditAnnotations"]["injected"]


def test_strict_mode_names_every_audience_in_its_denial() -> None:
    body = fixture("deployment-pod-annotated.json")
    body["request"]["object"]["metadata"]["annotations"][KEY] = "data-store, secret-store"
    message = denial(body, Contract(strict=True))["message"]
    assert "the tokens for 'data-store', 'secret-store' stay in /var/run/secrets/token-projector.io/tokens" in message


def test_the_offline_review_command_prints_the_pod_with_every_token_and_applies_the_allow_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "review.json"
    file.write_text(json.dumps(two()))
    assert main(["review", str(file), "--pod"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["volumes"] == [TWO]
    assert main(["review", str(file), "--allowed-audiences", "data-store"]) == 1
    assert "'secret-store', is not an audience this cluster allows; allowed: data-store" in capsys.readouterr().err
