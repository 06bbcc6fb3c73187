"""What ``token-projector audit`` reads from a live cluster: list calls only, each resource on its own.

Every resource is listed separately, so a permission that is missing costs that resource only:
it is recorded with the API server's own words (which name the verb, the resource and the
scope) and the rest of the report goes on. Token Secrets are listed as metadata only
(``PartialObjectMetadataList``): the API server sends no ``data``, so the audit never holds a
token. Objects are read as plain JSON, never through the client's typed models, which would
drop fields they do not know.
"""

from typing import Any

import orjson

from webhook.core.audit import Inventory, Unread, protected_accounts
from webhook.core.contract import Contract
from webhook.core.kubernetes import SYSTEM_NAMESPACE
from webhook.core.service_accounts import NAMESPACE_LABEL, NAMESPACE_LABEL_VALUE
from webhook.core.wire import Json
from webhook.errors import ClusterError
from webhook.install.deployment import NAMESPACE, OPT_OUT_LABEL
from webhook.install.kubeclient import Kubernetes, connect

TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""The Accept header that makes the API server send a list's metadata and nothing else."""
TRACKING_CONFIGMAP = "kube-apiserver-legacy-service-account-token-tracking"
"""In kube-system; its ``since`` is the date from which the API server labels legacy tokens it sees used."""
TOKEN_REVIEW_ATTRIBUTES = {"group": "authentication.k8s.io", "resource": "tokenreviews", "verb": "create"}
"""What the verifying proxy does with its Pod's service account token: the permission the audit asks about."""
PAGE = 500
TIMEOUT_SECONDS = 30

LISTS: tuple[tuple[str, str, str, str], ...] = (
    # resource, client class, method for all namespaces, method for one namespace
    ("secrets", "CoreV1Api", "list_secret_for_all_namespaces", "list_namespaced_secret"),
    ("serviceaccounts", "CoreV1Api", "list_service_account_for_all_namespaces", "list_namespaced_service_account"),
    ("pods", "CoreV1Api", "list_pod_for_all_namespaces", "list_namespaced_pod"),
    (
        "replicationcontrollers",
        "CoreV1Api",
        "list_replication_controller_for_all_namespaces",
        "list_namespaced_replication_controller",
    ),
    ("deployments", "AppsV1Api", "list_deployment_for_all_namespaces", "list_namespaced_deployment"),
    ("statefulsets", "AppsV1Api", "list_stateful_set_for_all_namespaces", "list_namespaced_stateful_set"),
    ("daemonsets", "AppsV1Api", "list_daemon_set_for_all_namespaces", "list_namespaced_daemon_set"),
    ("replicasets", "AppsV1Api", "list_replica_set_for_all_namespaces", "list_namespaced_replica_set"),
    ("jobs", "BatchV1Api", "list_job_for_all_namespaces", "list_namespaced_job"),
    ("cronjobs", "BatchV1Api", "list_cron_job_for_all_namespaces", "list_namespaced_cron_job"),
)
_GROUPS = {"CoreV1Api": "", "AppsV1Api": "apps", "BatchV1Api": "batch"}


class _Lister:
    """One cluster's list calls, paginated, each failure kept as an ``Unread`` instead of raised."""

    def __init__(self, kube: Kubernetes) -> None:
        self.kube = kube
        self.host = kube.api_client.configuration.host
        self.unread: list[Unread] = []

    def items(self, api: str, method: str, *, resource: str, namespace: str | None, **query: Any) -> list[Json] | None:
        """Every item, or ``None`` (recorded in ``unread``) when the API server would not list them."""
        call = getattr(getattr(self.kube.client, api)(self.kube.api_client), method)
        args = (namespace,) if namespace is not None else ()
        found: list[Json] = []
        page: str | None = None
        try:
            while True:
                response = call(
                    *args, limit=PAGE, _continue=page, _preload_content=False, _request_timeout=TIMEOUT_SECONDS, **query
                )
                body = orjson.loads(response.data)
                found += self._keep(body, resource=resource, namespace=namespace, headers=query.get("_headers"))
                page = (body.get("metadata") or {}).get("continue")
                if not page:
                    return found
        except self.kube.api_exception as error:
            status = getattr(error, "status", None)
            if not status:  # the client's word for a TLS failure: nothing was answered
                raise ClusterError(
                    f"cannot reach the Kubernetes API at {self.host}: {getattr(error, 'reason', error)}"
                ) from None
            if status == 401:
                raise ClusterError(
                    f"the Kubernetes API at {self.host} refused the credentials: {_said(error)}"
                ) from None
            self.unread.append(
                Unread(resource=_named(api, resource), namespace=namespace, status=status, message=_said(error))
            )
        except _NotMetadata as error:
            self.unread.append(
                Unread(resource=_named(api, resource), namespace=namespace, status=None, message=str(error))
            )
        except self.kube.transport_errors as error:
            cause = getattr(error, "reason", None) or error  # urllib3 wraps the socket error in MaxRetryError
            raise ClusterError(f"cannot reach the Kubernetes API at {self.host}: {cause}") from None
        return None

    def may_review_tokens(self, accounts: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Whether each (namespace, ServiceAccount) may create TokenReviews, as the API server answers a
        SubjectAccessReview for it (so every authorizer the cluster runs is asked, not RBAC read by hand).
        A refusal to answer is recorded in ``unread`` once, and the accounts left are not asked about."""
        api = self.kube.client.AuthorizationV1Api(self.kube.api_client)
        answers: dict[tuple[str, str], bool] = {}
        for namespace, account in accounts:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": f"system:serviceaccount:{namespace}:{account}",
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                    "resourceAttributes": TOKEN_REVIEW_ATTRIBUTES,
                },
            }
            try:
                response = api.create_subject_access_review(
                    body, _preload_content=False, _request_timeout=TIMEOUT_SECONDS
                )
            except self.kube.api_exception as error:
                status = getattr(error, "status", None)
                if not status:
                    raise ClusterError(
                        f"cannot reach the Kubernetes API at {self.host}: {getattr(error, 'reason', error)}"
                    ) from None
                resource = "subjectaccessreviews.authorization.k8s.io"
                self.unread.append(Unread(resource=resource, namespace=None, status=status, message=_said(error)))
                return answers
            except self.kube.transport_errors as error:
                cause = getattr(error, "reason", None) or error
                raise ClusterError(f"cannot reach the Kubernetes API at {self.host}: {cause}") from None
            answers[(namespace, account)] = bool((orjson.loads(response.data).get("status") or {}).get("allowed"))
        return answers

    @staticmethod
    def _keep(body: Json, *, resource: str, namespace: str | None, headers: Any) -> list[Json]:
        items: list[Json] = body.get("items") or []
        if headers is None:
            return items
        # Metadata was asked for: anything else is dropped unread, and said.
        if body.get("kind") != "PartialObjectMetadataList":
            raise _NotMetadata(
                f"the API server did not answer with metadata only (got {body.get('kind')!r}); "
                f"{resource} were dropped unread so that no token is held"
            )
        return [
            {"metadata": {k: v for k, v in (i.get("metadata") or {}).items() if k != "managedFields"}} for i in items
        ]


class _NotMetadata(Exception):
    pass


def read_inventory(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    webhook_namespace: str = NAMESPACE,
    contract: Contract | None = None,
) -> Inventory:
    """Everything the audit needs from the cluster, and what it could not read.

    With ``contract``, also whether each protected workload's ServiceAccount may create TokenReviews.
    """
    kube = connect(kubeconfig=kubeconfig, context=context, command="audit", extra="audit")
    lister = _Lister(kube)
    lists: dict[str, list[Json]] = {}
    try:
        for resource, api, all_namespaces, one_namespace in LISTS:
            query: dict[str, Any] = {}
            if resource == "secrets":
                query = {"field_selector": f"type={TOKEN_SECRET_TYPE}", "_headers": {"Accept": METADATA_ONLY}}
            method = one_namespace if namespace is not None else all_namespaces
            items = lister.items(api, method, resource=resource, namespace=namespace, **query)
            if items is not None:
                lists[resource] = items
        namespaces = lister.items(
            "CoreV1Api",
            "list_namespace",
            resource="namespaces",
            namespace=None,
            **({"field_selector": f"metadata.name={namespace}"} if namespace is not None else {}),
        )
        tracking = lister.items(
            "CoreV1Api",
            "list_namespaced_config_map",
            resource="configmaps",
            namespace=SYSTEM_NAMESPACE,
            field_selector=f"metadata.name={TRACKING_CONFIGMAP}",
        )
        accounts = protected_accounts(lists, contract) if contract is not None else {}
        reviewers = lister.may_review_tokens(sorted(accounts))
    finally:
        kube.api_client.close()
    exempt = {SYSTEM_NAMESPACE, webhook_namespace}
    exempt.update(
        str((n.get("metadata") or {}).get("name"))
        for n in namespaces or ()
        if ((n.get("metadata") or {}).get("labels") or {}).get(OPT_OUT_LABEL) == "true"
    )
    opted_in = (
        None
        if namespaces is None
        else frozenset(
            str((n.get("metadata") or {}).get("name"))
            for n in namespaces
            if ((n.get("metadata") or {}).get("labels") or {}).get(NAMESPACE_LABEL) == NAMESPACE_LABEL_VALUE
        )
    )
    since = next((str(c["data"]["since"]) for c in tracking or () if (c.get("data") or {}).get("since")), None)
    return Inventory(
        namespace=namespace,
        lists=lists,
        unread=lister.unread,
        tracking_since=since,
        exempt_namespaces=frozenset(exempt),
        service_account_namespaces=opted_in,
        token_reviewers=reviewers,
    )


def _named(api: str, resource: str) -> str:
    group = _GROUPS[api]
    return f"{resource}.{group}" if group else resource


def _said(error: Any) -> str:
    try:
        message = orjson.loads(error.body).get("message")
    except (TypeError, ValueError, AttributeError, orjson.JSONDecodeError):
        message = None
    return str(message or getattr(error, "reason", None) or error)
