"""Kubernetes objects reviewed as the Pods the API server would send the webhook for them. Pure, no I/O.

The webhook only ever sees Pods: a Deployment reaches it as the Pod its ReplicaSet creates. So a
manifest or a live workload is judged by building that Pod (what the controller writes, then what
the ServiceAccount admission plugin adds, which runs before every webhook) and handing it, in an
AdmissionReview, to ``webhook.core.review.review``: the one source of every verdict. Nothing here
decides anything about tokens.

What the controllers write (``GetPodFromTemplate`` in kubernetes/pkg/controller): the template's
labels, annotations, finalizers and spec; ``generateName: <owner>-`` and no name (a StatefulSet
names its Pods ``<set>-<ordinal>`` and adds a volume per claim template). The namespace is the
owner's. Fields only the API server's defaulting adds are left out: no verdict reads them.
"""

import base64
import copy
from typing import Any, NamedTuple

import orjson

from webhook.core.contract import Contract
from webhook.core.kubernetes import SERVICE_ACCOUNT_MOUNT_PATH
from webhook.core.messages import kind_of
from webhook.core.review import Reviewed, review
from webhook.core.service_accounts import AccountAnnotations
from webhook.core.wire import Json
from webhook.errors import InvalidReview

TEMPLATE_PATHS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "Pod": (frozenset({""}), ()),
    "Deployment": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "StatefulSet": (frozenset({"apps"}), ("spec", "template")),
    "DaemonSet": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "ReplicaSet": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "ReplicationController": (frozenset({""}), ("spec", "template")),
    "Job": (frozenset({"batch"}), ("spec", "template")),
    "CronJob": (frozenset({"batch"}), ("spec", "jobTemplate", "spec", "template")),
}
"""Each kind that makes Pods: the API groups it lives in and where its Pod template is."""

API_ACCESS_VOLUME = "kube-api-access-xxxxx"
"""The ServiceAccount plugin names its volume ``kube-api-access-`` and five random characters."""
_API_ACCESS_PREFIX = "kube-api-access-"


class ObjectReview(NamedTuple):
    """One object's verdict: the Pod that was reviewed, the webhook's answer, and its decoded patch."""

    pod: Json
    reviewed: Reviewed
    ops: list[Json]
    template_path: tuple[str, ...]
    """Where the Pod template is in the object, ``()`` for a Pod: the patch applies below it."""


def template_path(obj: Json) -> tuple[str, ...] | None:
    """Where ``obj`` keeps its Pod template, ``()`` for a Pod; ``None`` for a kind that makes no Pods."""
    known = TEMPLATE_PATHS.get(str(obj.get("kind")))
    if known is None:
        return None
    groups, path = known
    api_version = obj.get("apiVersion")
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    return path if group in groups else None


def pod_for(obj: Json, *, namespace: str, automount: bool | None = None) -> Json:
    """The Pod the API server would send the webhook for ``obj`` (a Pod or a workload), in ``namespace``.

    ``automount`` is the ServiceAccount's ``automountServiceAccountToken`` when known (the audit
    knows it; a manifest does not, and then the API server's default, true, is assumed).
    Raises ``InvalidReview`` naming the field when the template is not an object.
    """
    path = template_path(obj)
    if path is None:
        raise InvalidReview(f"a {obj.get('kind')} makes no Pods")
    if path == ():
        pod = copy.deepcopy(obj)
        metadata = pod.get("metadata")
        if metadata is None:
            metadata = pod["metadata"] = {}
        if isinstance(metadata, dict):
            metadata["namespace"] = namespace
    else:
        pod = _from_template(obj, path, namespace=namespace)
    _service_account_admission(pod, automount=automount)
    return pod


def admission_review(pod: Json, *, uid: str) -> Json:
    """The AdmissionReview the API server sends for creating ``pod``."""
    metadata = pod.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": name if isinstance(name, str) else "",
            "namespace": namespace if isinstance(namespace, str) else "",
            "operation": "CREATE",
            "userInfo": {},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def review_object(
    obj: Json,
    contract: Contract,
    *,
    namespace: str,
    uid: str,
    automount: bool | None = None,
    service_account: AccountAnnotations | None = None,
) -> ObjectReview:
    """The webhook's answer for ``obj``; raises ``InvalidReview`` (naming the object's own field) if unusable.

    ``service_account``: the Pod's ServiceAccount when it is known (ServiceAccount opt-in).
    """
    path = template_path(obj)
    if path is None:
        raise InvalidReview(f"a {obj.get('kind')} makes no Pods")
    pod = pod_for(obj, namespace=namespace, automount=automount)
    try:
        reviewed = review(admission_review(pod, uid=uid), contract, service_account=service_account)
    except InvalidReview as error:
        raise InvalidReview(_at(str(error), path)) from None
    return ObjectReview(pod=pod, reviewed=reviewed, ops=decoded_patch(reviewed), template_path=path)


def decoded_patch(reviewed: Reviewed) -> list[Json]:
    """The response's JSON patch, decoded; ``[]`` when there is none."""
    patch = reviewed.response["response"].get("patch")
    if patch is None:
        return []
    ops: list[Json] = orjson.loads(base64.b64decode(patch))
    return ops


def patched(obj: Json, verdict: ObjectReview) -> Json:
    """``obj`` as it would be with the webhook's patch applied to its Pod template (a copy).

    The patch was computed for the Pod, which holds what the template holds plus what the
    ServiceAccount plugin and a StatefulSet controller append: so every path is the same below the
    template, and an array the Pod had but the template lacks is created (see ``apply_adds``).
    """
    if not verdict.ops:
        return copy.deepcopy(obj)
    prefix = "".join("/" + part for part in verdict.template_path)
    result: Json = apply_adds(obj, [{**op, "path": prefix + op["path"]} for op in verdict.ops])
    return result


def apply_adds(document: Any, ops: list[Json]) -> Any:
    """``document`` with RFC 6902 ``add`` operations applied (a copy); the webhook emits no other op.

    One leniency beyond the RFC, for a patch made against a Pod and applied to its template: an
    element appended (``.../-``) or prepended (``.../0``) to an array the template does not have
    creates that array.
    """
    result: Any = copy.deepcopy(document)
    for op in ops:
        if op.get("op") != "add":
            raise ValueError(f"only add operations are supported, got {op.get('op')!r}")
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in str(op["path"]).split("/")[1:]]
        *parents, last = tokens
        target = result
        for depth, token in enumerate(parents):
            if isinstance(target, list):
                target = target[int(token)]
                continue
            if token not in target and depth == len(parents) - 1 and (last == "-" or last == "0"):
                target[token] = []
            target = target[token]
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            if last == "-":
                target.append(value)
            else:
                target.insert(int(last), value)
        else:
            target[last] = value
    return result


def _from_template(obj: Json, path: tuple[str, ...], *, namespace: str) -> Json:
    template: Any = obj
    for depth, part in enumerate(path):
        template = template.get(part) if isinstance(template, dict) else None
        if not isinstance(template, dict):
            raise InvalidReview(f"{'.'.join(path[: depth + 1])} must be an object, got {kind_of(template)}")
    metadata = template.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidReview(f"{'.'.join(path)}.metadata must be an object, got {kind_of(metadata)}")
    owner = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    owner_name = str(owner.get("name") or "") if isinstance(owner, dict) else ""
    pod_metadata: Json = {"generateName": f"{owner_name}-" if owner_name else "", "namespace": namespace}
    for key in ("labels", "annotations", "finalizers"):
        if key in metadata:
            pod_metadata[key] = copy.deepcopy(metadata[key])
    pod: Json = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_metadata,
        "spec": copy.deepcopy(template.get("spec")),
    }
    if obj.get("kind") == "StatefulSet":
        _stateful_set_pod(obj, pod, owner_name=owner_name)
    return pod


def _stateful_set_pod(obj: Json, pod: Json, *, owner_name: str) -> None:
    """The first Pod of a StatefulSet: named ``<set>-<ordinal>``, with a volume per claim template."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    ordinals = spec.get("ordinals") if isinstance(spec, dict) else None
    start = ordinals.get("start", 0) if isinstance(ordinals, dict) else 0
    pod["metadata"]["name"] = f"{owner_name}-{start}"
    claims = spec.get("volumeClaimTemplates") if isinstance(spec, dict) else None
    pod_spec = pod["spec"]
    if not isinstance(claims, list) or not isinstance(pod_spec, dict):
        return
    volumes = pod_spec.get("volumes")
    if volumes is not None and not isinstance(volumes, list):
        return
    volumes = list(volumes or [])
    for claim in claims:
        claim_name = (claim.get("metadata") or {}).get("name") if isinstance(claim, dict) else None
        if not isinstance(claim_name, str):
            continue
        volume = {
            "name": claim_name,
            "persistentVolumeClaim": {"claimName": f"{claim_name}-{owner_name}-{start}"},
        }
        # The controller's claim volume replaces a template volume of the same name.
        volumes = [v for v in volumes if not (isinstance(v, dict) and v.get("name") == claim_name)] + [volume]
    if volumes:
        pod_spec["volumes"] = volumes


def _service_account_admission(pod: Json, *, automount: bool | None) -> None:
    """What the ServiceAccount admission plugin adds before any webhook sees the Pod.

    The account defaults to ``default``; unless the Pod (else its ServiceAccount) says
    ``automountServiceAccountToken: false``, every container without a mount at the API token path
    gets the ``kube-api-access-*`` volume there. Malformed shapes are left for the review to name.
    """
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    wanted = spec.get("automountServiceAccountToken")
    if wanted is None:
        wanted = True if automount is None else automount
    if wanted is not True:
        return
    volumes = spec.get("volumes")
    if volumes is not None and not isinstance(volumes, list):
        return
    existing = next(
        (
            v["name"]
            for v in volumes or ()
            if isinstance(v, dict) and str(v.get("name", "")).startswith(_API_ACCESS_PREFIX)
        ),
        None,
    )
    name = existing or API_ACCESS_VOLUME
    mount = {"name": name, "readOnly": True, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}
    needed = False
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for container in containers:
            if not isinstance(container, dict):
                continue
            mounts = container.get("volumeMounts")
            if mounts is None:
                container["volumeMounts"] = [dict(mount)]
                needed = True
            elif isinstance(mounts, list) and not any(
                isinstance(m, dict) and m.get("mountPath") == SERVICE_ACCOUNT_MOUNT_PATH for m in mounts
            ):
                mounts.append(dict(mount))
                needed = True
    if needed and existing is None:
        spec["volumes"] = [*(volumes or []), _api_access_volume(name)]


def _api_access_volume(name: str) -> Json:
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def _at(message: str, path: tuple[str, ...]) -> str:
    """A review's message about ``request.object...`` said about the object's own field."""
    where = ".".join(path)
    return message.replace("request.object.", f"{where}." if where else "").replace(
        "request.object", where or "the Pod"
    )
