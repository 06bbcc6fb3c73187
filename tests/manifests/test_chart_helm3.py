"""The chart under Helm 3 as well as Helm 4: Helm 3 still has security fixes (until February 2027).

Platform teams upgrade Helm on their own schedule; a chart that only Helm 4 renders would fail them at
install time. These tests hold the two renders equal, object for object, for the default values and
every ``ci/`` values file, check Helm 3's install order where it differs from Helm 4's, and run Helm 3's
own strict lint.
"""

import copy
from pathlib import Path

import pytest

from tests.manifests.chart import CHART, VALUES_FILES, helm, helm3_binary, label, template, template_error, values_args
from webhook.core.wire import Json

CLUSTER = ("--kube-version", "1.37.0")
"""What `helm install` reads from the cluster; `helm template` needs it said (Helm 3 assumes v1.20)."""


def generated_blanked(objects: list[Json]) -> list[Json]:
    """``objects`` with what each render generates afresh (genCA's keys, their expiry) replaced by a marker."""
    blanked = copy.deepcopy(objects)
    for obj in blanked:
        if obj["kind"] == "Secret":
            assert obj["data"], obj["metadata"]["name"]
            assert all(obj["data"].values()), obj["metadata"]["name"]
            obj["data"] = dict.fromkeys(obj["data"], "<generated>")
            annotations = obj["metadata"].get("annotations", {})
            if "token-projector.io/not-after" in annotations:  # the generated certificate's expiry, in seconds
                annotations["token-projector.io/not-after"] = "<generated>"
        for webhook in obj.get("webhooks", []) if obj["kind"] == "MutatingWebhookConfiguration" else []:
            if "caBundle" in webhook["clientConfig"]:
                assert webhook["clientConfig"]["caBundle"]
                webhook["clientConfig"]["caBundle"] = "<generated>"
    return blanked


def by_kind_and_name(objects: list[Json]) -> list[Json]:
    return sorted(objects, key=lambda obj: (obj["kind"], obj["metadata"]["name"]))


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_helm_3_renders_the_same_objects_as_helm_4(path: Path | None) -> None:
    with_helm_3 = generated_blanked(template(*values_args(path), *CLUSTER, binary=helm3_binary()))
    with_helm_4 = generated_blanked(template(*values_args(path), *CLUSTER))
    assert by_kind_and_name(with_helm_3) == by_kind_and_name(with_helm_4)


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_helm_3_also_applies_the_webhook_configuration_after_the_deployment_and_service_it_calls(
    path: Path | None,
) -> None:
    # Helm 3's kind order does not know webhook configurations: it applies them last, with the kinds
    # from CRDs (cert-manager's), where Helm 4 applies them just before those. Both are after what they call.
    kinds = [obj["kind"] for obj in template(*values_args(path), *CLUSTER, binary=helm3_binary())]
    if "MutatingWebhookConfiguration" not in kinds:
        return
    position = kinds.index("MutatingWebhookConfiguration")
    assert set(kinds[:position]) >= {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}


def test_helm_3_template_without_a_kube_version_says_to_pass_one() -> None:
    error = template_error(binary=helm3_binary())
    assert "Kubernetes v1.20.0 has no matchConditions (1.28+)" in error
    assert "pass --kube-version" in error


@pytest.mark.parametrize("path", VALUES_FILES, ids=label)
def test_helm_3_lint_strict_passes(path: Path | None) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(path), binary=helm3_binary())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
