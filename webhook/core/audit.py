"""What ``token-projector audit`` concludes from what it read of a cluster. Pure, no I/O.

Every verdict comes from ``webhook.core.review.review``: a stored Pod is reviewed as it is (it has
been through admission already), a workload as the Pod its controller would create
(``webhook.core.workloads``), once under the given settings and once with
``legacy_token_scope="all"``. So the audit can never disagree with the webhook. The rest is
bookkeeping: which Pods use which legacy token Secret, which ServiceAccounts still list Secrets,
and which opted-in Pods lack their projected token. Secrets arrive as metadata only.
"""

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from webhook.core.contract import AUDIENCE_KEY, Contract
from webhook.core.pod import service_account_of
from webhook.core.review import review
from webhook.core.service_accounts import INHERITED_KEYS, AccountAnnotations, token_annotations
from webhook.core.sidecar import asks_for_proxy
from webhook.core.vault import vault_warnings
from webhook.core.wire import Json
from webhook.core.workloads import TEMPLATE_PATHS, admission_review, review_object
from webhook.errors import InvalidReview

SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
"""On a token Secret: the ServiceAccount it is a token of."""
LEGACY_TOKEN_LAST_USED_LABEL = "kubernetes.io/legacy-token-last-used"
"""Set by the API server, to a date, on the day a legacy token authenticates."""
LEGACY_TOKEN_INVALID_SINCE_LABEL = "kubernetes.io/legacy-token-invalid-since"
"""Set by the token cleaner (controller-manager) on an unused legacy token it invalidated."""

WORKLOAD_RESOURCES = {
    "deployments": ("apps/v1", "Deployment"),
    "statefulsets": ("apps/v1", "StatefulSet"),
    "daemonsets": ("apps/v1", "DaemonSet"),
    "replicasets": ("apps/v1", "ReplicaSet"),
    "replicationcontrollers": ("v1", "ReplicationController"),
    "jobs": ("batch/v1", "Job"),
    "cronjobs": ("batch/v1", "CronJob"),
}
"""The resources whose objects make Pods, with the apiVersion and kind they are listed as (items carry neither)."""
_OWNED_ELSEWHERE = {"ReplicaSet": "Deployment", "Job": "CronJob"}
"""A ReplicaSet of a Deployment and a Job of a CronJob have their owner's template: reported once, by it."""


@dataclass(frozen=True, kw_only=True)
class Unread:
    """A list the audit could not read, and why (the API server's own words)."""

    resource: str
    namespace: str | None
    """``None`` for a cluster-wide list."""
    status: int | None
    message: str


@dataclass(frozen=True, kw_only=True)
class Inventory:
    """What was read: each resource's items by plural name; a resource not read is absent from ``lists``."""

    namespace: str | None
    lists: dict[str, list[Json]]
    unread: list[Unread] = field(default_factory=list)
    tracking_since: str | None = None
    exempt_namespaces: frozenset[str] = frozenset()
    """Namespaces the webhook is never called for (kube-system, its own, opted out)."""
    service_account_namespaces: frozenset[str] | None = None
    """Namespaces labelled for ServiceAccount opt-in; None when the namespaces could not be read."""
    token_reviewers: dict[tuple[str, str], bool] = field(default_factory=dict)
    """For each (namespace, ServiceAccount) of a protected workload, whether the API server said (by a
    SubjectAccessReview) that it may create TokenReviews; an account not asked about is absent."""


def analyse(inventory: Inventory, contract: Contract) -> Json:
    """The audit's report, as plain JSON (the table is drawn from it)."""
    lists = inventory.lists
    settings = [("current", contract)]
    if contract.legacy_token_scope != "all":
        settings.append(("scopeAll", dataclasses.replace(contract, legacy_token_scope="all")))
    automount = {
        (_meta(sa, "namespace"), _meta(sa, "name")): sa.get("automountServiceAccountToken")
        for sa in lists.get("serviceaccounts", [])
    }

    pods, opted_in = [], []
    users: dict[tuple[str, str], list[str]] = {}
    for pod in lists.get("pods", []):
        namespace, name = _meta(pod, "namespace"), _meta(pod, "name")
        for secret, how in _secret_references(pod.get("spec")):
            users.setdefault((namespace, secret), []).append(f"Pod {name} ({how})")
        verdicts = {key: _review_pod(pod, c) for key, c in settings}
        if _notable(verdicts):
            pods.append({"namespace": namespace, "name": name, **_exempt(inventory, namespace), **verdicts})
        audience = ((pod.get("metadata") or {}).get("annotations") or {}).get(contract.annotation(AUDIENCE_KEY))
        if audience is not None:
            opted_in.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "audience": audience,
                    "hasToken": _has_token(pod, verdicts["current"], contract),
                    **_exempt(inventory, namespace),
                    "current": verdicts["current"],
                }
            )

    annotated_accounts, lacking = _service_account_opt_in(inventory, contract)
    vault = [
        {"kind": "Pod", "namespace": _meta(pod, "namespace"), "name": _meta(pod, "name"), "warnings": warned}
        for pod in lists.get("pods", [])
        if (warned := _vault(pod, contract))
    ]

    workloads = []
    for kind, obj in _workloads(lists):
        namespace, name = _meta(obj, "namespace"), _meta(obj, "name")
        template = _template_spec(obj)
        for secret, how in _secret_references(template):
            users.setdefault((namespace, secret), []).append(f"{kind} {name} ({how})")
        account = (template or {}).get("serviceAccountName") or (template or {}).get("serviceAccount") or "default"
        known = automount.get((namespace, str(account)))
        verdicts = {
            key: _review_workload(obj, c, namespace=namespace, automount=known if isinstance(known, bool) else None)
            for key, c in settings
        }
        if _notable(verdicts):
            workloads.append(
                {"kind": kind, "namespace": namespace, "name": name, **_exempt(inventory, namespace), **verdicts}
            )

    secrets = [
        {
            "namespace": _meta(secret, "namespace"),
            "name": _meta(secret, "name"),
            "serviceAccount": ((secret.get("metadata") or {}).get("annotations") or {}).get(
                SERVICE_ACCOUNT_NAME_ANNOTATION, ""
            ),
            "created": _meta(secret, "creationTimestamp"),
            "lastUsed": _label(secret, LEGACY_TOKEN_LAST_USED_LABEL),
            "invalidSince": _label(secret, LEGACY_TOKEN_INVALID_SINCE_LABEL),
            "usedBy": users.get((_meta(secret, "namespace"), _meta(secret, "name")), []),
        }
        for secret in lists.get("secrets", [])
    ]
    token_names = {(s["namespace"], s["name"]) for s in secrets}
    accounts = [
        {
            "namespace": _meta(sa, "namespace"),
            "name": _meta(sa, "name"),
            "secrets": names,
            "legacyTokenSecrets": [n for n in names if (_meta(sa, "namespace"), n) in token_names],
        }
        for sa in lists.get("serviceaccounts", [])
        if (names := [str(s.get("name")) for s in sa.get("secrets") or () if isinstance(s, dict) and s.get("name")])
    ]

    without_reviews = [
        {"namespace": namespace, "serviceAccount": account, "protected": protected}
        for (namespace, account), protected in sorted(protected_accounts(lists, contract).items())
        if inventory.token_reviewers.get((namespace, account)) is False
    ]

    def refused(rows: list[Json], key: str) -> int:
        return sum(
            1 for row in rows if key in row and row[key]["outcome"] in ("denied", "invalid") and not row["exempt"]
        )

    return {
        "namespace": inventory.namespace,
        "settings": {
            "legacyTokenPolicy": contract.legacy_token_policy,
            "legacyTokenScope": contract.legacy_token_scope,
            "strict": contract.strict,
        },
        "trackingSince": inventory.tracking_since,
        "legacyTokenSecrets": secrets,
        "serviceAccountsWithSecrets": accounts,
        "pods": pods,
        "workloads": workloads,
        "optedInPods": opted_in,
        "annotatedServiceAccounts": annotated_accounts,
        "podsWithoutTheirServiceAccountsToken": lacking,
        "vaultAgentPods": vault,
        "protectedWithoutTokenReview": without_reviews,
        "notRead": [dataclasses.asdict(u) for u in inventory.unread],
        "summary": {
            "refused": refused(pods, "current") + refused(workloads, "current"),
            "refusedWithScopeAll": refused(pods, "scopeAll" if len(settings) > 1 else "current")
            + refused(workloads, "scopeAll" if len(settings) > 1 else "current"),
            "warned": sum(1 for row in pods + workloads if row["current"]["warnings"]),
            "legacyTokenSecrets": len(secrets),
            "optedInWithoutToken": sum(1 for row in opted_in if not row["hasToken"]),
            "withoutServiceAccountsToken": len(lacking),
            "vaultAgentPods": len(vault),
            "protectedWithoutTokenReview": len(without_reviews),
            "notRead": len(inventory.unread),
        },
    }


def _service_account_opt_in(inventory: Inventory, contract: Contract) -> tuple[list[Json], list[Json]]:
    """The ServiceAccounts that set an audience or lifetime, and the running Pods that lack what they set.

    A ServiceAccount's change reaches only the Pods created after it (a Pod's volumes never change):
    each running Pod that the webhook would now give a token is listed with how to replace it.
    """
    labelled = inventory.service_account_namespaces
    annotated: dict[tuple[str, str], AccountAnnotations] = {}
    rows = []
    for sa in inventory.lists.get("serviceaccounts", []):
        raw = (sa.get("metadata") or {}).get("annotations")
        kept = token_annotations(raw if isinstance(raw, dict) else {}, contract)
        if not any(contract.annotation(key) in kept for key in INHERITED_KEYS):
            continue
        namespace, name = _meta(sa, "namespace"), _meta(sa, "name")
        annotated[(namespace, name)] = AccountAnnotations(namespace, name, kept)
        rows.append(
            {
                "namespace": namespace,
                "name": name,
                "annotations": kept,
                "namespaceOptedIn": None if labelled is None else namespace in labelled,
            }
        )
    lacking = []
    for pod in inventory.lists.get("pods", []):
        namespace = _meta(pod, "namespace")
        name = service_account_of(pod) if isinstance(pod.get("spec"), dict) else "default"
        account = annotated.get((namespace, str(name)))
        if account is None or (labelled is not None and namespace not in labelled) or _has_volume(pod, contract):
            continue
        try:
            verdict = review(admission_review(pod, uid="audit"), contract, service_account=account)
        except InvalidReview:
            continue
        if verdict.outcome == "mutated" or verdict.outcome == "denied":
            owners = (pod.get("metadata") or {}).get("ownerReferences") or ()
            owner = next((o for o in owners if isinstance(o, dict) and o.get("controller")), None)
            rows_owner = f"{owner.get('kind')}/{owner.get('name')}" if owner else ""
            lacking.append(
                {
                    "namespace": namespace,
                    "name": _meta(pod, "name"),
                    "serviceAccount": account.name,
                    "owner": rows_owner,
                    "outcome": verdict.outcome,
                    "roll": _roll_hint(namespace, owner, _meta(pod, "name")),
                }
            )
    return rows, lacking


def _roll_hint(namespace: str, owner: Json | None, pod: str) -> str:
    """How to replace a running Pod so that its replacement gets the ServiceAccount's token."""
    if owner is None:
        return f"delete and re-create Pod {pod} (kubectl -n {namespace} replace --force -f ...)"
    kind, name = owner.get("kind"), str(owner.get("name") or "")
    if kind == "ReplicaSet":  # a Deployment's: its name less the pod-template-hash suffix
        return f"kubectl -n {namespace} rollout restart deployment/{name.rpartition('-')[0] or name}"
    if kind in ("StatefulSet", "DaemonSet"):
        return f"kubectl -n {namespace} rollout restart {str(kind).lower()}/{name}"
    return f"the next run of {kind} {name} gets it; or delete Pod {pod}"


def _has_volume(pod: Json, contract: Contract) -> bool:
    spec = pod.get("spec")
    volumes = (spec.get("volumes") if isinstance(spec, dict) else None) or ()
    return any(isinstance(v, dict) and v.get("name") == contract.volume_name for v in volumes)


def _vault(pod: Json, contract: Contract) -> list[str]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return []
    return vault_warnings(annotations, has_token_volume=_has_volume(pod, contract), contract=contract)


def _review_pod(pod: Json, contract: Contract) -> Json:
    uid = _meta(pod, "uid") or "audit"
    try:
        return _verdict(review(admission_review(pod, uid=uid), contract))
    except InvalidReview as error:
        return {"outcome": "invalid", "message": str(error), "warnings": []}


def _review_workload(obj: Json, contract: Contract, *, namespace: str, automount: bool | None) -> Json:
    uid = _meta(obj, "uid") or "audit"
    try:
        verdict = review_object(obj, contract, namespace=namespace, uid=uid, automount=automount)
    except InvalidReview as error:
        return {"outcome": "invalid", "message": str(error), "warnings": []}
    return _verdict(verdict.reviewed)


def _verdict(reviewed: Any) -> Json:
    response = reviewed.response["response"]
    warnings = list(response.get("warnings", ()))
    message = response["status"]["message"] if reviewed.outcome == "denied" else "; ".join(warnings)
    return {"outcome": reviewed.outcome, "message": message, "warnings": warnings}


def _notable(verdicts: dict[str, Json]) -> bool:
    return any(v["outcome"] in ("denied", "invalid") or v["warnings"] for v in verdicts.values())


def _exempt(inventory: Inventory, namespace: str) -> Json:
    return {"exempt": namespace in inventory.exempt_namespaces}


def protected_accounts(lists: dict[str, list[Json]], contract: Contract) -> dict[tuple[str, str], list[str]]:
    """The ServiceAccount of each Pod and workload that asks for the verifying proxy, with what asks (``Kind name``).

    The proxy's TokenReviews run as that account: the audit asks the API server whether it may.
    """
    found: dict[tuple[str, str], list[str]] = {}
    objects = [("Pod", pod, pod.get("metadata"), pod.get("spec")) for pod in lists.get("pods", [])]
    for kind, obj in _workloads(lists):
        template: Any = obj
        for part in TEMPLATE_PATHS[kind][1]:
            template = template.get(part) if isinstance(template, dict) else None
        if isinstance(template, dict):
            objects.append((kind, obj, template.get("metadata"), template.get("spec")))
    for kind, obj, metadata, spec in objects:
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if not isinstance(annotations, dict) or not isinstance(spec, dict) or not asks_for_proxy(annotations, contract):
            continue
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        found.setdefault((_meta(obj, "namespace"), str(account)), []).append(f"{kind} {_meta(obj, 'name')}")
    return found


def _workloads(lists: dict[str, list[Json]]) -> Iterator[tuple[str, Json]]:
    for resource, (version, kind) in WORKLOAD_RESOURCES.items():
        for obj in lists.get(resource, []):
            owners = (obj.get("metadata") or {}).get("ownerReferences") or ()
            if any(o.get("controller") and o.get("kind") == _OWNED_ELSEWHERE.get(kind) for o in owners):
                continue
            yield kind, {**obj, "apiVersion": version, "kind": kind}


def _template_spec(obj: Json) -> Json | None:
    value: Any = obj
    for part in TEMPLATE_PATHS[str(obj["kind"])][1]:
        value = value.get(part) if isinstance(value, dict) else None
    spec = value.get("spec") if isinstance(value, dict) else None
    return spec if isinstance(spec, dict) else None


def _secret_references(spec: object) -> Iterator[tuple[str, str]]:
    """The Secrets a Pod spec reads, each with how: a volume, a projected volume, an env var, envFrom."""
    if not isinstance(spec, dict):
        return
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, dict):
            continue
        secret = volume.get("secret")
        if isinstance(secret, dict) and secret.get("secretName"):
            yield str(secret["secretName"]), f"volume {volume.get('name')}"
        for source in (volume.get("projected") or {}).get("sources") or ():
            projected = source.get("secret") if isinstance(source, dict) else None
            if isinstance(projected, dict) and projected.get("name"):
                yield str(projected["name"]), f"projected volume {volume.get('name')}"
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or ():
            if not isinstance(container, dict):
                continue
            for env in container.get("env") or ():
                ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}) if isinstance(env, dict) else {}
                if isinstance(ref, dict) and ref.get("name"):
                    yield str(ref["name"]), f"env {env.get('name')} of container {container.get('name')}"
            for source in container.get("envFrom") or ():
                ref = (source.get("secretRef") or {}) if isinstance(source, dict) else {}
                if isinstance(ref, dict) and ref.get("name"):
                    yield str(ref["name"]), f"envFrom of container {container.get('name')}"


def _has_token(pod: Json, verdict: Json, contract: Contract) -> bool:
    """Whether the Pod already carries what the webhook gives it: the review would add nothing.

    A Pod the webhook would refuse gets no answer from the review: then the token volume's presence says.
    """
    if verdict["outcome"] in ("mutated", "unchanged"):
        return bool(verdict["outcome"] == "unchanged")
    volumes = (pod.get("spec") or {}).get("volumes") or ()
    return any(isinstance(v, dict) and v.get("name") == contract.volume_name for v in volumes)


def _meta(obj: Json, key: str) -> str:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""


def _label(obj: Json, key: str) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(key) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else None
