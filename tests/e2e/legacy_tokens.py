"""Legacy service account token Secrets made as the tokens controller made them, for a cluster without one.

No kube-controller-manager runs in these tests, so nothing fills a token Secret's data. We write it
the way its tokens controller did (``pkg/controller/serviceaccount/tokens_controller.go``): type
``kubernetes.io/service-account-token``, the ServiceAccount's name and uid as annotations, and
``token``, ``ca.crt`` and ``namespace`` in the data. The token is either a real legacy JWT, signed
with the API server's service account key and the legacy claims (issuer
``kubernetes/serviceaccount``), so that the API server accepts it and tracks its use, or a fake
with a recognisable marker. Either way the tests then look for its value in everything printed.
"""

import base64
import hashlib
import json
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.e2e.conftest import ControlPlane

LEGACY_ISSUER = "kubernetes/serviceaccount"
TOKEN_TYPE = "kubernetes.io/service-account-token"


def fake_token() -> str:
    return "FAKE-LEGACY-TOKEN-" + uuid.uuid4().hex


def signed_token(control_plane: ControlPlane, *, namespace: str, account: str, account_uid: str, secret: str) -> str:
    """A legacy token for ``account`` stored in Secret ``secret``, as the tokens controller signed them."""
    key = serialization.load_pem_private_key((control_plane.workdir / "sa.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "ES256", "kid": _b64(hashlib.sha256(der).digest())}
    claims = {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": account,
        "kubernetes.io/serviceaccount/service-account.uid": account_uid,
        "sub": f"system:serviceaccount:{namespace}:{account}",
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def create_token_secret(
    control_plane: ControlPlane,
    *,
    namespace: str,
    name: str,
    account: str,
    token: str,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    account_uid = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")["metadata"][
        "uid"
    ]
    ca = (control_plane.workdir / "apiserver.crt").read_bytes()
    return control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "metadata": {
                "name": name,
                "labels": labels or {},
                "annotations": {
                    "kubernetes.io/service-account.name": account,
                    "kubernetes.io/service-account.uid": account_uid,
                },
            },
            "type": TOKEN_TYPE,
            "data": {
                "token": base64.b64encode(token.encode()).decode(),
                "ca.crt": base64.b64encode(ca).decode(),
                "namespace": base64.b64encode(namespace.encode()).decode(),
            },
        },
    )


def account_uid(control_plane: ControlPlane, namespace: str, account: str) -> str:
    uid: str = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")["metadata"][
        "uid"
    ]
    return uid


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
