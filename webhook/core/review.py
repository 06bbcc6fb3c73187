"""The review: one decoded AdmissionReview in, the AdmissionReview to answer out. Pure, no I/O.

This is the whole decision of the webhook, in order: answer in the version the request came in;
leave alone anything that is not a Pod CREATE, and mirror Pods; read the Pod's annotations;
apply the legacy-token policy; plan the patch. The server, the ``review`` command and the tests
all call ``review_body`` (or ``review``, given a decoded body) and nothing below it.
"""

import base64
from collections.abc import Container
from typing import Any, NamedTuple, cast

import orjson

from webhook.core.annotations import unknown_annotations
from webhook.core.contract import Contract
from webhook.core.document import absent_names, decode
from webhook.core.kubernetes import MIRROR_POD_ANNOTATION
from webhook.core.legacy import apply_policy
from webhook.core.messages import kind_of, shown
from webhook.core.mutation import plan_injection
from webhook.core.pod import annotations_of, check_shape, display_name
from webhook.core.service_accounts import AccountAnnotations, read_with_account
from webhook.core.sidecar import PROXY_CONTAINER, has_proxy_container, plan_proxy, read_protection
from webhook.core.wire import (
    ADMISSION_API_VERSIONS,
    AdmissionApiVersion,
    AdmissionResponse,
    AdmissionReviewResponse,
    Json,
    Outcome,
)
from webhook.errors import Denied, InvalidReview

AUDIT_INJECTED = "injected"
"""Audit annotation key; the API server prefixes it with the webhook's name."""
AUDIT_LEGACY_TOKEN = "legacy-token"
AUDIT_PROXY = "proxy-injected"


class Reviewed(NamedTuple):
    """The answer, and what the server logs and counts about it (never tokens or env values).

    A NamedTuple, not a frozen dataclass: as immutable, and built in a quarter of the time (a
    frozen dataclass sets each field through ``object.__setattr__``), once per request.
    """

    response: AdmissionReviewResponse
    outcome: Outcome
    uid: str
    namespace: str
    pod: str
    operation: str


def review_body(raw: bytes, contract: Contract) -> Reviewed:
    """Answer one AdmissionReview as it came over the wire; raises ``InvalidReview`` when it is not one."""
    return review(decode(raw), contract, absent=AbsentFrom(raw))


class AbsentFrom:
    """``name in absent`` as ``absent_names`` answers it for ``raw``, each name searched for when first asked.

    A search of a large body costs as much as a tenth of its review, and only a Pod with several
    audiences asks about the second env var: asking on demand keeps a one-audience Pod at one search.
    """

    __slots__ = ("_answers", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._answers: dict[object, bool] = {}

    def __contains__(self, name: object) -> bool:
        answer = self._answers.get(name)
        if answer is None:
            answer = self._answers[name] = isinstance(name, str) and bool(absent_names(self._raw, (name,)))
        return answer


def review(
    body: object,
    contract: Contract,
    *,
    absent: Container[str] = frozenset(),
    service_account: AccountAnnotations | None = None,
) -> Reviewed:
    """Answer one decoded AdmissionReview; raises ``InvalidReview`` when ``body`` is not one.

    ``absent`` holds names known to occur nowhere in ``body`` (see ``webhook.core.document``), which
    the review then need not look for; the answer is the same with or without it. ``service_account``
    is the Pod's ServiceAccount as the server read it (``webhook.core.service_accounts``), or None
    when ServiceAccount opt-in is off.
    """
    api_version, request = _envelope(body)
    uid = request["uid"]
    operation = request.get("operation") or ""
    namespace = request.get("namespace") or ""
    pod_name = request.get("name") or ""
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    outcome: Outcome = "unchanged"

    if _is_pod_create(request):
        pod = check_shape(request.get("object"))
        pod_name = display_name(pod)
        annotations = annotations_of(pod)
        if MIRROR_POD_ANNOTATION not in annotations:
            try:
                outcome, response = _mutate(
                    pod, annotations, uid=uid, contract=contract, absent=absent, account=service_account
                )
            except Denied as denial:
                response = {
                    "uid": uid,
                    "allowed": False,
                    "status": {
                        "status": "Failure",
                        "code": denial.code,
                        "reason": denial.reason,
                        "message": denial.message,
                    },
                }
                outcome = "denied"

    return Reviewed(
        response={"apiVersion": api_version, "kind": "AdmissionReview", "response": response},
        outcome=outcome,
        uid=uid,
        namespace=namespace,
        pod=pod_name,
        operation=operation,
    )


def _mutate(
    pod: Json,
    annotations: dict[str, str],
    *,
    uid: str,
    contract: Contract,
    absent: Container[str],
    account: AccountAnnotations | None = None,
) -> tuple[Outcome, AdmissionResponse]:
    """The outcome and the allowing response for an admissible Pod; raises ``Denied`` otherwise."""
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    spec, warnings, source = read_with_account(annotations, account, contract)
    warnings += [
        f"annotation {key} is not one token-projector knows and was ignored"
        for key in unknown_annotations(annotations, contract)
    ]
    protection = read_protection(pod, annotations, contract)
    proxy_ops = plan_proxy(pod, protection, contract=contract, asks_for_token=spec is not None) if protection else []
    legacy = apply_policy(pod, audiences=spec.audiences if spec else None, contract=contract)
    warnings += legacy
    if legacy:
        response["auditAnnotations"] = {AUDIT_LEGACY_TOKEN: "warned: " + "; ".join(legacy)}
    ops = []
    if spec is not None:
        if protection is not None and has_proxy_container(pod):
            # The proxy needs no caller's token: on re-invocation it is left out, as on the first call.
            spec = spec._replace(skip_containers=spec.skip_containers | {PROXY_CONTAINER})
        injection = plan_injection(pod, spec, contract=contract, absent=absent)
        warnings += injection.warnings
        ops = injection.ops
        if injection.ops:
            response.setdefault("auditAnnotations", {})[AUDIT_INJECTED] = (
                # Every audience, comma-separated as in the annotation (an audience holds no comma).
                f"volume={contract.volume_name} audience={','.join(spec.audiences)} "
                f"expirationSeconds={spec.expiration_seconds} containers={','.join(injection.containers) or '-'}"
                + (f" from={source.replace(' ', ':')}" if source else "")
            )
    if proxy_ops and protection is not None:
        ops = ops + proxy_ops
        response.setdefault("auditAnnotations", {})[AUDIT_PROXY] = (
            f"container={PROXY_CONTAINER} port={protection.port} audience={protection.audience} "
            f"allow={','.join(protection.allow)}"
        )
    outcome: Outcome = "unchanged"
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(ops)).decode("ascii")
        outcome = "mutated"
    if warnings:
        response["warnings"] = warnings
    return outcome, response


def _envelope(body: object) -> tuple[AdmissionApiVersion, dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidReview("body must be a JSON object (an AdmissionReview)")
    if body.get("kind") != "AdmissionReview":
        raise InvalidReview(f"kind must be AdmissionReview, got {shown(body.get('kind'))}")
    api_version = body.get("apiVersion")
    if api_version not in ADMISSION_API_VERSIONS:
        raise InvalidReview(f"apiVersion must be one of {', '.join(ADMISSION_API_VERSIONS)}, got {shown(api_version)}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise InvalidReview("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise InvalidReview("request.uid must be a non-empty string")
    _check_request_fields(request)
    return cast(AdmissionApiVersion, api_version), request


_REQUEST_STRINGS = ("operation", "namespace", "name", "subResource")
_REQUEST_OBJECTS = {"resource": ("group", "version", "resource"), "kind": ("group", "version", "kind")}
"""The request's GroupVersionResource and GroupVersionKind, each with every part a string (``""`` for core)."""


def _check_request_fields(request: dict[str, Any]) -> None:
    """Type-check the request fields the review reads, so none is ever coerced or misread.

    A wrong type is the client's mistake, said as such (HTTP 400 naming the field): a value that is
    not a string where a string belongs must never be stringified, nor quietly taken for "not a
    Pod CREATE" and allowed. Absent fields stay absent (the API server always sends them), but an
    object it sends is whole: a resource without its ``resource`` part cannot be told from a Pod.
    """
    for key in _REQUEST_STRINGS:
        value = request.get(key)
        if value is not None and type(value) is not str:
            raise InvalidReview(f"request.{key} must be a string, got {kind_of(value)}")
    for key, parts in _REQUEST_OBJECTS.items():
        value = request.get(key)
        if value is None:
            continue
        if type(value) is not dict:
            raise InvalidReview(f"request.{key} must be an object, got {kind_of(value)}")
        for part in parts:
            inner = value.get(part)
            if type(inner) is not str:
                raise InvalidReview(f"request.{key}.{part} must be a string, got {kind_of(inner)}")
    dry_run = request.get("dryRun")
    if dry_run is not None and type(dry_run) is not bool:
        raise InvalidReview(f"request.dryRun must be a boolean, got {kind_of(dry_run)}")


def _is_pod_create(request: dict[str, Any]) -> bool:
    resource = request.get("resource")  # an object or None: checked by _check_request_fields
    return (
        request.get("operation") == "CREATE"
        and resource is not None
        and resource.get("group") == ""
        and resource.get("resource") == "pods"
        and not request.get("subResource")
    )
