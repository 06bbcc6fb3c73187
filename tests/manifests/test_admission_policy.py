"""The admission-policy engine as installs offer it: a kustomize component and the chart's ``engine`` value.

Both install one generated file, charts/token-projector/files/admission-policy/admission-policy.yaml,
which must be exactly what ``token-projector policy`` prints with the default settings.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.manifests.chart import CHART, helm, template, template_error
from tests.manifests.conftest import with_components
from tests.tls_material import make_certs
from tests.tools import REPO, require
from webhook.core.contract import Contract
from webhook.core.policy import admission_policies
from webhook.core.wire import Json
from webhook.install.deployment import NAMESPACE, OPT_OUT_LABEL

GENERATED = CHART / "files" / "admission-policy" / "admission-policy.yaml"
POLICY_KINDS = [
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
]
"""The mutation, the refusals and the warnings, each with its binding."""
WEBHOOK_KINDS = {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "MutatingWebhookConfiguration"}
KUBE = ("--kube-version", "1.37.0")


def test_the_shipped_policies_are_what_the_policy_command_prints_for_the_default_settings() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "webhook", "policy"], capture_output=True, text=True, check=True, env={}, cwd=REPO
    ).stdout
    assert GENERATED.read_text() == printed, "run `make admission-policy` to generate the file again"


@pytest.fixture(scope="module")
def repo_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ and charts/ side by side, as in a clone (the component includes the chart's file)."""
    tree = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "manifests", tree / "manifests", ignore=shutil.ignore_patterns("*.crt", "*.key"))
    shutil.copytree(REPO / "charts", tree / "charts")
    make_certs(tree / "manifests" / "overlays" / "self-managed" / "certs")
    return tree


def build(tree: Path, overlay: str) -> list[Json]:
    kustomize = require("kustomize", hint="run `make tools` (builds it with Go)")
    path = tree / "manifests" / with_components(tree / "manifests", overlay, "admission-policy")
    result = subprocess.run([kustomize, "build", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def policies(objects: list[Json]) -> list[Json]:
    return [o for o in objects if o["kind"] in POLICY_KINDS]


def test_the_component_replaces_every_part_of_the_webhook_with_the_policies(repo_tree: Path) -> None:
    objects = build(repo_tree, "base")
    assert sorted(o["kind"] for o in objects) == sorted(["Namespace", *POLICY_KINDS])
    expected = admission_policies(
        Contract(), excluded_namespaces=("kube-system", NAMESPACE), opt_out_label=OPT_OUT_LABEL
    )

    def named(objs: list[Json]) -> list[Json]:
        return sorted(objs, key=lambda o: (o["kind"], o["metadata"]["name"]))

    for obj, want in zip(named(policies(objects)), named(expected), strict=True):
        assert "namespace" not in obj["metadata"], "the policies and bindings are cluster-scoped"
        assert obj["spec"] == want["spec"]
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_the_component_on_an_overlay_leaves_no_webhook_to_call(repo_tree: Path) -> None:
    objects = build(repo_tree, "overlays/self-managed")
    kinds = {o["kind"] for o in objects}
    assert not kinds & WEBHOOK_KINDS
    assert set(POLICY_KINDS) <= kinds


def test_the_chart_value_engine_policy_renders_the_policies_instead_of_the_webhook() -> None:
    objects = template("--set", "engine=policy", *KUBE, release="prod")
    assert not {o["kind"] for o in objects} & (WEBHOOK_KINDS | {"Secret", "Certificate", "Issuer"})
    shipped = {(o["kind"], "prod-" + o["metadata"]["name"]): o for o in yaml.safe_load_all(GENERATED.read_text())}
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in policies(objects)}
    assert rendered.keys() == shipped.keys(), "every generated object, named after the release"
    for key, obj in rendered.items():
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
        want = shipped[key]["spec"]
        if "policyName" in want:
            assert obj["spec"]["policyName"] == obj["metadata"]["name"]
            assert {k: v for k, v in obj["spec"].items() if k not in ("matchResources", "policyName")} == {
                k: v for k, v in want.items() if k not in ("matchResources", "policyName")
            }
        else:
            assert obj["spec"] == want, "the policies are the generated ones, untouched"


def test_the_charts_policy_bindings_are_scoped_as_its_webhook_is() -> None:
    args = ["--set", "webhook.excludedNamespaces={batch}", "--set", "webhook.optOutLabel=example.com/no-tokens"]
    args += ["--set", "webhook.namespaceSelector.matchLabels.tokens=yes"]
    webhook = next(o for o in template(*args) if o["kind"] == "MutatingWebhookConfiguration")
    for binding in template("--set", "engine=policy", *KUBE, *args):
        if binding["kind"].endswith("Binding"):
            assert binding["spec"]["matchResources"]["namespaceSelector"] == webhook["webhooks"][0]["namespaceSelector"]


def test_engine_policy_with_a_contract_value_is_refused_naming_the_value_and_the_command() -> None:
    error = template_error("--set", "engine=policy", "--set", "contract.strict=true", *KUBE)
    assert "contract.strict" in error
    assert "token-projector policy" in error


def test_engine_policy_with_service_account_opt_in_is_refused_as_a_webhook_only_feature() -> None:
    error = template_error("--set", "engine=policy", "--set", "serviceAccountOptIn.enabled=true", *KUBE)
    assert "serviceAccountOptIn.enabled is a feature of the webhook engine only" in error


def test_engine_policy_on_a_cluster_older_than_1_36_is_refused_naming_the_version() -> None:
    error = template_error("--set", "engine=policy", "--kube-version", "1.35.2")
    assert "1.36" in error
    assert "v1.35.2" in error


@pytest.mark.parametrize("engine", ["webhook", "policy"])
def test_helm_lint_strict_passes_for_each_engine(engine: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--set", f"engine={engine}", *KUBE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unknown_engine_is_refused_by_the_values_schema() -> None:
    assert "engine" in template_error("--set", "engine=policies", *KUBE)
