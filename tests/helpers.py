"""Builders for AdmissionReviews and a checked way to apply a review's patch, shared by all test areas."""

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import orjson

from webhook.core.contract import Contract
from webhook.core.review import Reviewed, review, review_body
from webhook.core.wire import Json

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT = Contract()
TOKEN_PATH = "/var/run/secrets/token-projector.io/tokens/token"


def fixture(name: str) -> Json:
    data: Json = json.loads((FIXTURES / name).read_text())
    return data


def container(name: str, **fields: Any) -> Json:
    return {"name": name, "image": "registry.example.com/app:1", **fields}


def make_pod(
    *containers: Json,
    annotations: dict[str, str] | None = None,
    init_containers: list[Json] | None = None,
    volumes: list[Json] | None = None,
    **spec: Any,
) -> Json:
    """A Pod as the API server sends it: empty arrays are absent, not empty."""
    pod: Json = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "api"},
        "spec": {"containers": list(containers) or [container("app")], **spec},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    if init_containers is not None:
        pod["spec"]["initContainers"] = init_containers
    if volumes is not None:
        pod["spec"]["volumes"] = volumes
    return pod


def annotated(audience: str = "data-store", **more: str) -> dict[str, str]:
    """Pod annotations opting in to ``audience``; ``more`` keys are under the prefix, '_' read as '-'."""
    out = {"token-projector.io/audience": audience}
    out.update({f"token-projector.io/{key.replace('_', '-')}": value for key, value in more.items()})
    return out


def admission_review(
    pod: Json | None,
    *,
    operation: str = "CREATE",
    api_version: str = "admission.k8s.io/v1",
    uid: str = "7f9c2a1e-3b4d-4c5e-8f6a-0b1c2d3e4f5a",
    resource: tuple[str, str] = ("", "pods"),
    sub_resource: str | None = None,
    dry_run: bool = False,
) -> Json:
    request: Json = {
        "uid": uid,
        "kind": {"group": resource[0], "version": "v1", "kind": "Pod"},
        "resource": {"group": resource[0], "version": "v1", "resource": resource[1]},
        "namespace": "api",
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin"},
        "object": pod,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def run(body: Json, contract: Contract = DEFAULT) -> Reviewed:
    """Review ``body`` as the server does (its bytes), and check what must hold for every review.

    The answer must be the same by every path: from the bytes (where the env var's name can be
    seen to be absent, and the env entries go unread), from the decoded body (where they are
    read), and from bytes that spell the name with a JSON escape (where absence cannot be seen).
    And the review must not modify the request it was given.
    """
    before = copy.deepcopy(body)
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:  # an integer past 64 bits (the property tests draw some): only json writes it
        raw = json.dumps(body).encode()
    reviewed = review_body(raw, contract)
    assert review(body, contract) == reviewed, "reading the env entries must not change the answer"
    name = contract.env_var.encode()
    escaped = raw.replace(name, name[:-1] + b"\\u%04x" % name[-1])
    assert review_body(escaped, contract) == reviewed, "an escaped spelling must not change the answer"
    assert body == before, "the review must not change the request it was given"
    return reviewed


def ops_of(reviewed: Reviewed) -> list[Json]:
    response = reviewed.response["response"]
    if "patch" not in response:
        return []
    assert response.get("patchType") == "JSONPatch"
    ops: list[Json] = json.loads(base64.b64decode(response["patch"]))
    assert ops, "a patch is never empty: no changes means no patch field"
    assert {op["op"] for op in ops} == {"add"}, f"only add operations are allowed: {ops}"
    return ops


def patched(body: Json, contract: Contract = DEFAULT) -> Json:
    """The Pod after its review's patch, applied with jsonpatch as the API server would."""
    reviewed = run(body, contract)
    assert reviewed.response["response"]["allowed"], reviewed.response["response"].get("status")
    result: Json = jsonpatch.apply_patch(copy.deepcopy(body["request"]["object"]), ops_of(reviewed))
    return result


def denial(body: Json, contract: Contract = DEFAULT) -> Json:
    """The metav1.Status of a review that must be a denial."""
    response = run(body, contract).response["response"]
    assert response["allowed"] is False, f"expected a denial, got {response}"
    assert "patch" not in response
    status: Json = dict(response["status"])
    return status


def token_volume(audience: str = "data-store", expiration: int = 3600) -> Json:
    return {
        "name": "audience-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration, "path": "token"}}
            ]
        },
    }


TOKEN_MOUNT = {"name": "audience-token", "mountPath": "/var/run/secrets/token-projector.io/tokens", "readOnly": True}
TOKEN_ENV = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": TOKEN_PATH}


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``value`` (keys and indexes), ``()`` for the value itself: where hostile edits go."""
    found = [prefix]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        found += paths_of(child, (*prefix, key))
    return found


def nested_json(depth: int) -> bytes:
    """``{"a":[{"a":[ ... 0 ... ]}]}``: a JSON value ``depth`` levels deep (an even number), built without recursion."""
    return b'{"a":[' * (depth // 2) + b"0" + b"]}" * (depth // 2)


ORJSON_MAX_DEPTH = 1024
"""orjson refuses documents nested deeper than this; everything below it reaches the review."""


def body_with_nested_value_at(path: tuple[Any, ...], depth: int) -> bytes:
    """The annotated fixture with a value ``depth`` levels deep at ``path``, as bytes (never as a deep dict)."""
    body = fixture("deployment-pod-annotated.json")
    parent: Any = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = "__NESTED__"
    return json.dumps(body).encode().replace(b'"__NESTED__"', nested_json(depth))
