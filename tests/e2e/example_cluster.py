"""The example's objects on the test API server, made as ``kubectl apply -k`` and the controllers would make them.

- ``install``: ``kubectl apply -k examples/api-and-data-store/manifests``, the README's command, when the
  namespaces ``api`` and ``data-store`` are free; if another test took them, the rendered objects are
  applied under unique namespace names instead (``Installed`` says which names were used).
- ``pod_from``: a Pod from a Deployment's Pod template, created through the API server as the
  ReplicaSet controller creates it (no controller-manager runs here), so the ServiceAccount admission
  plugin, Pod Security admission and token-projector each do to it what they do in a cluster.
- ``allowed``: what RBAC lets a user do, as the API server answers a SubjectAccessReview.
- ``legacy_token``: a legacy Secret token, made as the token controller made them before Kubernetes
  1.24 (a ``kubernetes.io/service-account-token`` Secret holding a never-expiring JWT signed with the
  cluster's service account key): the kind of token the article starts from.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import ApiError, ControlPlane
from tests.tools import REPO

EXAMPLE = REPO / "examples" / "api-and-data-store"
MANIFESTS = EXAMPLE / "manifests"
NAMES = ("api", "data-store")
"""The namespaces the example's manifests create, which are also its services' names."""
LEGACY_ISSUER = "kubernetes/serviceaccount"


@dataclass(frozen=True)
class Installed:
    """What the example's manifests made on the API server, and under which namespace names."""

    api: str
    """The api's namespace (``api`` unless it was taken)."""
    data_store: str
    objects: list[dict[str, Any]]

    def deployment(self, namespace: str) -> dict[str, Any]:
        found: dict[str, Any] = next(
            o for o in self.objects if o["kind"] == "Deployment" and o["metadata"]["namespace"] == namespace
        )
        return found

    @property
    def allow(self) -> str:
        return f"{self.api}/api"

    @property
    def binding(self) -> str:
        """The name of the ClusterRoleBinding that lets the data store create TokenReviews."""
        name: str = next(o["metadata"]["name"] for o in self.objects if o["kind"] == "ClusterRoleBinding")
        return name


def rendered(control_plane: ControlPlane) -> list[dict[str, Any]]:
    """The example's manifests as ``kubectl kustomize`` renders them (kubectl's own kustomize)."""
    result = control_plane.kubectl("kustomize", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _free(control_plane: ControlPlane, namespace: str) -> bool:
    try:
        control_plane.request("GET", f"/api/v1/namespaces/{namespace}")
    except ApiError as error:
        if error.status == 404:
            return True
        raise
    return False


def install(control_plane: ControlPlane) -> Installed:
    objects = rendered(control_plane)
    if all(_free(control_plane, name) for name in NAMES):
        applied = control_plane.kubectl("apply", "-k", str(MANIFESTS))
        assert applied.returncode == 0, applied.stderr
        return Installed("api", "data-store", objects)
    suffix = uuid.uuid4().hex[:6]
    names = {name: f"{name}-{suffix}" for name in NAMES}
    objects = [_renamed(o, names) for o in objects]
    applied = control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    assert applied.returncode == 0, applied.stderr
    return Installed(names["api"], names["data-store"], objects)


def _renamed(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``obj`` with the example's namespaces renamed (and the one cluster-scoped binding made unique)."""
    obj = copy.deepcopy(obj)
    metadata = obj["metadata"]
    if obj["kind"] == "Namespace":
        metadata["name"] = names.get(metadata["name"], metadata["name"])
    if metadata.get("namespace") in names:
        metadata["namespace"] = names[metadata["namespace"]]
    if obj["kind"] == "ClusterRoleBinding":
        metadata["name"] += "-" + names["api"]
        for subject in obj["subjects"]:
            subject["namespace"] = names.get(subject["namespace"], subject["namespace"])
    if obj["kind"] == "Deployment":
        for item in obj["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if item["name"] == "ALLOW":
                item["value"] = f"{names['api']}/api"
    return obj


def pod_from(
    control_plane: ControlPlane, deployment: dict[str, Any], *, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Pod from ``deployment``'s template (``annotations`` changed, if given), as the API server stored it."""
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = template["metadata"]
    metadata["annotations"] = {**metadata.get("annotations", {}), **(annotations or {})}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**metadata, "generateName": deployment["metadata"]["name"] + "-"},
        "spec": template["spec"],
    }
    return control_plane.create_pod(deployment["metadata"]["namespace"], pod)


def allowed(control_plane: ControlPlane, user: str, *, verb: str, group: str, resource: str) -> bool:
    """Whether RBAC lets ``user`` do ``verb`` on ``resource``, as the API server answers a SubjectAccessReview."""
    review = control_plane.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": {"verb": verb, "group": group, "resource": resource}},
        },
    )
    return bool(review["status"].get("allowed"))


def _key_id(public_der: bytes) -> str:
    # kube-apiserver's keyIDFromPublicKey: unpadded base64url of the SHA-256 of the DER public key.
    return base64.urlsafe_b64encode(hashlib.sha256(public_der).digest()).decode().rstrip("=")


def legacy_token(control_plane: ControlPlane, namespace: str, service_account: str) -> str:
    """A legacy Secret token for ``service_account``, as the token controller wrote them; see the docstring."""
    account = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}")
    secret = f"{service_account}-token-{uuid.uuid4().hex[:5]}"
    key = serialization.load_pem_private_key((control_plane.workdir / "sa.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "the control plane signs with an ECDSA key (conftest)"
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": service_account,
        "kubernetes.io/serviceaccount/service-account.uid": account["metadata"]["uid"],
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": _key_id(public)})
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": secret,
                "annotations": {
                    "kubernetes.io/service-account.name": service_account,
                    "kubernetes.io/service-account.uid": account["metadata"]["uid"],
                },
            },
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    )
    return token
