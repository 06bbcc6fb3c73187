"""examples/api-and-data-store/manifests: renders with kustomize, validates strictly, and says what the example claims.

Rendered in place (``kustomize build examples/api-and-data-store/manifests``), because the kustomization
uses the TokenReview ClusterRole from ``manifests/audience-token`` by relative path: the same files a
reader applies with ``kubectl apply -k``. What the API server does with them (token-projector's volume
in the api's Pod, Pod Security admission, RBAC) is proven in tests/e2e/test_example_api_and_data_store.py.
"""

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.tools import REPO, require

EXAMPLE = REPO / "examples" / "api-and-data-store"
MANIFESTS = EXAMPLE / "manifests"
LIBRARY_RBAC = REPO / "manifests" / "audience-token"
WEBHOOK_DEPLOYMENT = REPO / "manifests" / "base" / "deployment.yaml"
KUBERNETES_VERSION = "1.37.0"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    kustomize = require("kustomize", hint="run `make tools` (builds it with Go)")
    result = subprocess.run([kustomize, "build", str(MANIFESTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def pod_spec(objects: list[Obj], name: str) -> Obj:
    spec: Obj = one(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def env(objects: list[Obj], name: str) -> dict[str, str]:
    return {item["name"]: item["value"] for item in pod_spec(objects, name)["containers"][0].get("env", [])}


def source_documents() -> list[tuple[str, Obj]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.mark.parametrize(("name", "obj"), source_documents(), ids=[name for name, _ in source_documents()])
def test_every_manifest_of_the_example_is_valid_against_the_kubernetes_schema_in_strict_mode(
    name: str, obj: Obj
) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_renders_to_valid_objects_one_of_each_the_example_needs(objects: list[Obj]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects) == [
        ("ClusterRole", "", "audience-token-reviewer"),
        ("ClusterRoleBinding", "", "data-store-token-reviewer"),
        ("Deployment", "api", "api"),
        ("Deployment", "data-store", "data-store"),
        ("Namespace", "", "api"),
        ("Namespace", "", "data-store"),
        ("Service", "api", "api"),
        ("Service", "data-store", "data-store"),
        ("ServiceAccount", "api", "api"),
        ("ServiceAccount", "data-store", "data-store"),
    ]


def test_the_tokenreview_cluster_role_is_the_librarys_own_bound_to_the_data_store_only(objects: list[Obj]) -> None:
    shipped = yaml.safe_load((LIBRARY_RBAC / "clusterrole.yaml").read_text())
    assert one(objects, "ClusterRole", "audience-token-reviewer") == shipped, "used as shipped, not copied"
    assert shipped["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    binding = one(objects, "ClusterRoleBinding", "data-store-token-reviewer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "audience-token-reviewer",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "data-store", "namespace": "data-store"}]
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")], "no other permission is granted"


def test_the_api_pod_asks_token_projector_for_a_data_store_token_and_writes_no_token_volume(objects: list[Obj]) -> None:
    template = one(objects, "Deployment", "api")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"token-projector.io/audience": "data-store"}
    spec = template["spec"]
    assert spec.get("volumes", []) == [], "the webhook adds the token volume; none is written by hand"
    assert all("volumeMounts" not in c for c in spec["containers"])
    assert "SERVICE_ACCOUNT_TOKEN_PATH" not in env(objects, "api"), "the webhook sets it"


def test_only_the_data_store_gets_a_kubernetes_api_credential(objects: list[Obj]) -> None:
    assert one(objects, "ServiceAccount", "api").get("automountServiceAccountToken") is False
    assert pod_spec(objects, "api")["automountServiceAccountToken"] is False
    # The data store creates TokenReviews: it needs its own service account token, explicitly.
    assert pod_spec(objects, "data-store")["automountServiceAccountToken"] is True
    assert one(objects, "ServiceAccount", "data-store").get("automountServiceAccountToken") is not False


def test_the_data_store_checks_its_own_audience_and_allows_the_api_service_account_only(objects: list[Obj]) -> None:
    settings = env(objects, "data-store")
    assert settings["AUDIENCE"] == "data-store"
    assert settings["ALLOW"] == "api/api"
    assert float(settings["REVIEW_CACHE_SECONDS"]) <= 10


def test_the_api_calls_the_data_store_through_its_service(objects: list[Obj]) -> None:
    service = one(objects, "Service", "data-store")
    (port,) = service["spec"]["ports"]
    assert env(objects, "api")["DATA_STORE_URL"] == "http://data-store.data-store.svc.cluster.local"
    assert port["port"] == 80


@pytest.mark.parametrize("name", ["api", "data-store"])
def test_each_service_selects_its_pods_and_targets_a_named_container_port(objects: list[Obj], name: str) -> None:
    service = one(objects, "Service", name)
    template = one(objects, "Deployment", name)["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    named = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in named


@pytest.mark.parametrize(("name", "module"), [("api", "api"), ("data-store", "data_store")])
def test_each_container_runs_its_service_from_the_examples_image_as_the_dockerfile_builds_it(
    objects: list[Obj], name: str, module: str
) -> None:
    (container,) = pod_spec(objects, name)["containers"]
    assert container["image"] == "api-and-data-store:0.1.0"
    assert container["command"] == ["python", "-m", f"services.{module}"]
    assert (EXAMPLE / "services" / f"{module}.py").is_file()


@pytest.mark.parametrize("name", ["api", "data-store"])
def test_each_pod_runs_restricted_as_the_webhooks_own_deployment_does(objects: list[Obj], name: str) -> None:
    webhook = yaml.safe_load(WEBHOOK_DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    spec = pod_spec(objects, name)
    assert spec["securityContext"] == webhook["securityContext"]
    (container,) = spec["containers"]
    assert container["securityContext"] == webhook["containers"][0]["securityContext"]
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", ["api", "data-store"])
def test_each_namespace_enforces_the_restricted_pod_security_standard(objects: list[Obj], name: str) -> None:
    labels = one(objects, "Namespace", name)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_readme_applies_the_folder_the_tests_render(objects: list[Obj]) -> None:
    readme = (EXAMPLE / "README.md").read_text()
    assert "kubectl apply -k examples/api-and-data-store/manifests" in readme
    assert Path(MANIFESTS / "kustomization.yaml").is_file()
