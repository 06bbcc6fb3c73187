"""The wire formats token-projector speaks, typed as the Kubernetes API server sends and reads them.

These are typed views over plain JSON: nothing here converts or validates anything (the
review checks what it relies on). They exist so that mypy checks that the core builds
exactly the fields the API server reads, and so that a reader sees the contract in one page.
Pods stay plain dicts on purpose: typed Pod models drop fields they do not know.
"""

from typing import Any, Literal, NotRequired, TypedDict

Json = dict[str, Any]
"""A JSON object as decoded: Pods, containers and volumes are kept in this form, never modelled."""

AdmissionApiVersion = Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
ADMISSION_API_VERSIONS: tuple[AdmissionApiVersion, ...] = (
    "admission.k8s.io/v1",
    "admission.k8s.io/v1beta1",
)

Outcome = Literal["mutated", "unchanged", "denied"]
"""What a review did to one request: the label that metrics and logs use."""


class AddOp(TypedDict):
    """The only RFC 6902 operation token-projector emits: it adds, never replaces or removes."""

    op: Literal["add"]
    path: str
    value: Any


class Status(TypedDict):
    """The metav1.Status of a denial: ``code`` and ``message`` reach the ``kubectl`` user."""

    status: Literal["Failure"]
    code: int
    reason: str
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    patch: NotRequired[str]
    patchType: NotRequired[Literal["JSONPatch"]]
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class AdmissionReviewResponse(TypedDict):
    apiVersion: AdmissionApiVersion
    kind: Literal["AdmissionReview"]
    response: AdmissionResponse
