"""manifests/audience-token: the least privilege a TokenReviewer needs, bindable with kustomize."""

import subprocess

import yaml

from tests.tools import REPO, require

FOLDER = REPO / "manifests" / "audience-token"


def rendered() -> list[dict[str, object]]:
    kustomize = require("kustomize", hint="run `make tools`")
    out = subprocess.run([kustomize, "build", str(FOLDER)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_the_cluster_role_grants_create_on_tokenreviews_and_nothing_else() -> None:
    role = next(d for d in rendered() if d["kind"] == "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]


def test_the_example_binding_is_a_cluster_role_binding_to_that_role_for_one_service_account() -> None:
    objects = rendered()
    assert sorted(str(d["kind"]) for d in objects) == ["ClusterRole", "ClusterRoleBinding"]
    binding = next(d for d in objects if d["kind"] == "ClusterRoleBinding")
    role = next(d for d in objects if d["kind"] == "ClusterRole")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],  # type: ignore[index]
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "secret-store", "namespace": "secret-store"}]


def test_the_role_name_is_the_one_the_reviewer_names_in_its_403_message() -> None:
    from audience_token.reviewer import CLUSTER_ROLE

    role = yaml.safe_load((FOLDER / "clusterrole.yaml").read_text())
    assert role["metadata"]["name"] == CLUSTER_ROLE
