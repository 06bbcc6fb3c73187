"""The admission-policy engine is generated from the contract: every setting reaches it, nothing is restated.

That the policies do what the webhook does is proven against the real API server
(tests/e2e/test_policy_differential.py); these tests pin what can be seen without one.
"""

import dataclasses
import fnmatch
import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from webhook.core.contract import Contract, audience_file_name
from webhook.core.policy import admission_policies, cel_string, glob_regex, percent_escapes
from webhook.errors import ConfigError

SCOPE: dict[str, Any] = {
    "excluded_namespaces": ("kube-system", "token-projector"),
    "opt_out_label": "token-projector.io/opt-out",
}


def rendered(contract: Contract) -> str:
    return json.dumps(admission_policies(contract, **SCOPE))


def test_the_engine_is_a_mutating_and_a_validating_policy_each_with_its_binding() -> None:
    objects = admission_policies(Contract(), **SCOPE)
    assert [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("admissionregistration.k8s.io/v1", "MutatingAdmissionPolicy", "token-projector"),
        ("admissionregistration.k8s.io/v1", "MutatingAdmissionPolicyBinding", "token-projector"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "token-projector"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "token-projector"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "token-projector-warnings"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "token-projector-warnings"),
    ]
    mutating, mutating_binding, validating, validating_binding, warning, warning_binding = objects
    assert mutating_binding["spec"]["policyName"] == mutating["metadata"]["name"]
    assert validating_binding["spec"]["policyName"] == validating["metadata"]["name"]
    assert warning_binding["spec"]["policyName"] == warning["metadata"]["name"]
    assert validating_binding["spec"]["validationActions"] == ["Deny"]
    assert warning_binding["spec"]["validationActions"] == ["Warn"]
    assert mutating["spec"]["failurePolicy"] == validating["spec"]["failurePolicy"] == "Fail"
    assert mutating["spec"]["reinvocationPolicy"] == "IfNeeded"
    assert [m["patchType"] for m in mutating["spec"]["mutations"]] == ["JSONPatch"]
    for validation in validating["spec"]["validations"] + warning["spec"]["validations"]:
        assert validation["messageExpression"]


def test_the_bindings_leave_alone_the_namespaces_the_webhook_leaves_alone() -> None:
    objects = admission_policies(Contract(), excluded_namespaces=("kube-system", "tp"), opt_out_label="x/opt-out")
    for binding in objects[1::2]:
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "tp"]},
            {"key": "x/opt-out", "operator": "NotIn", "values": ["true"]},
        ]


@pytest.mark.parametrize(
    ("setting", "value", "seen"),
    [
        ("annotation_prefix", "tokens.example.com", "'tokens.example.com/audience'"),
        ("volume_name", "my-token", "'my-token'"),
        ("mount_path", "/run/my-tokens", "'/run/my-tokens'"),
        ("token_file", "jwt", "'jwt'"),
        ("env_var", "MY_TOKEN", "'MY_TOKEN'"),
        ("dir_env_var", "MY_TOKENS", "'MY_TOKENS'"),
        ("default_expiration_seconds", 1234, "1234"),
        ("max_expiration_seconds", 4321, "4321"),
        ("denied_audiences", ("forbidden-one",), "'forbidden-one'"),
        ("allowed_audiences", ("only-*",), "only-"),
        ("max_audiences", 5, "<= 5"),
        ("strict", True, "strict mode"),
    ],
)
def test_every_setting_reaches_the_policies(setting: str, value: object, seen: str) -> None:
    default = rendered(Contract())
    changed = rendered(Contract(**{setting: value}))  # type: ignore[arg-type]
    assert seen in changed
    assert seen not in default, "the default already shows it: the test would pass without the setting"


def test_no_default_of_the_contract_is_restated_in_the_generator() -> None:
    source = open(sys.modules[admission_policies.__module__].__file__ or "").read()  # noqa: SIM115
    for field in dataclasses.fields(Contract):
        if isinstance(field.default, str):
            assert repr(field.default) not in source, f"{field.name}'s default is restated in webhook/core/policy.py"


def test_the_legacy_token_policy_and_scope_decide_which_pods_the_validating_policy_sees() -> None:
    def validating(**settings: str) -> dict[str, object]:
        spec: dict[str, object] = admission_policies(Contract(**settings), **SCOPE)[2]["spec"]  # type: ignore[arg-type]
        return spec

    def conditions(spec: dict[str, object]) -> list[str]:
        return [c["name"] for c in spec["matchConditions"]]  # type: ignore[attr-defined]

    # The refusing policy also sees a Pod that carries only the verifying proxy's annotations, to refuse it.
    assert conditions(validating()) == ["not-a-mirror-pod", "has-opt-in-annotation"]
    assert conditions(validating(legacy_token_scope="all")) == ["not-a-mirror-pod"]
    assert conditions(validating(legacy_token_scope="all", legacy_token_policy="warn")) == [
        "not-a-mirror-pod",
        "has-opt-in-annotation",
    ]
    warnings = admission_policies(Contract(legacy_token_scope="all", legacy_token_policy="off"), **SCOPE)[4]["spec"]
    assert conditions(warnings) == ["not-a-mirror-pod"], "the webhook sees every Pod, and warns on any"
    assert "legacy service account token" in json.dumps(validating())
    assert "legacy service account token" not in json.dumps(validating(legacy_token_policy="off"))


def test_legacy_tokens_under_warn_are_a_warning_of_the_warning_policy_and_no_refusal() -> None:
    deny, warn = (
        json.dumps(
            [
                o
                for o in admission_policies(Contract(legacy_token_policy="warn"), **SCOPE)
                if o["metadata"]["name"] == name
            ]
        )
        for name in ("token-projector", "token-projector-warnings")
    )
    assert "legacy service account token" in warn
    assert "legacy service account token" not in deny


def test_an_annotation_the_contract_knows_and_the_policies_do_not_implement_is_refused_naming_it() -> None:
    # The verifying proxy's annotations are the webhook's only (a sidecar the policies do not add).
    refusal = json.dumps(admission_policies(Contract(), **SCOPE)[2]["spec"]["validations"])
    protect = (
        "['token-projector.io/protect-allow', 'token-projector.io/protect-audience', 'token-projector.io/protect-port']"
    )
    assert f"{protect}.filter(k, k in variables.annotations)" in refusal
    assert "only the token-projector webhook engine does" in refusal


def test_a_character_class_in_allowed_audiences_is_refused_as_webhook_only() -> None:
    with pytest.raises(ConfigError, match=r"--allowed-audiences.*\[\.\.\.\].*webhook engine"):
        admission_policies(Contract(allowed_audiences=("data-[ab]",)), **SCOPE)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=1, max_size=40))
def test_the_escape_table_and_the_dot_rule_give_the_webhooks_file_name_for_every_ascii_audience(audience: str) -> None:
    # The CEL of the ``names`` variable, step for step: kept as is, or each character escaped by the
    # table, and a dot escaped at either end.
    escapes = percent_escapes()
    if re.fullmatch(r"[a-z0-9_-]([a-z0-9._-]*[a-z0-9_-])?", audience):
        name = audience
    else:
        last = len(audience) - 1
        name = "".join("%2E" if ch == "." and i in (0, last) else escapes.get(ch, ch) for i, ch in enumerate(audience))
    assert name == audience_file_name(audience)


@given(
    st.text(alphabet="ab*?.-/:%é\n", max_size=8),
    st.text(alphabet="ab.-/:%é\n", max_size=8),
)
def test_a_glob_becomes_a_regular_expression_that_matches_what_fnmatch_matches(pattern: str, value: str) -> None:
    # RE2's \x{...} is Python's \U........: the same expression for Python's re, for this check.
    python = re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: f"\\U{int(m.group(1), 16):08x}", glob_regex(pattern))
    python = python.replace("\\z", "\\Z")  # RE2's end of text is \z, Python's \Z
    assert (re.search(python, value) is not None) == fnmatch.fnmatchcase(value, pattern)


@pytest.mark.parametrize("text", ["plain", "it's", "back\\slash", "tab\there", "\x00\x1f", "données", "\u2028"])
def test_a_cel_string_literal_holds_any_text(text: str) -> None:
    literal = cel_string(text)
    assert literal[0] == literal[-1] == "'"
    # CEL's escapes are Python's, for these: evaluating the literal as Python gives the text back.
    assert eval(literal) == text  # noqa: S307 -- a string literal we built, checked to be one


def test_the_policy_command_prints_the_objects_as_yaml_from_serve_s_flags_and_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "--volume-name", "jwt-volume"],
        capture_output=True,
        text=True,
        check=True,
        env={"TOKEN_PROJECTOR_STRICT": "true", "PATH": "/usr/bin:/bin"},
    )
    objects = list(yaml.safe_load_all(result.stdout))
    assert objects == admission_policies(Contract(volume_name="jwt-volume", strict=True), **SCOPE)


def test_the_policy_command_says_which_setting_it_cannot_render() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "--allowed-audiences", "data-[ab]"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--allowed-audiences" in result.stderr
    assert result.stdout == ""
