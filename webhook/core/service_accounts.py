"""A ServiceAccount's annotations as an input of the review: where identity already lives.

``PREFIX/audience`` and ``PREFIX/expiration-seconds`` on a ServiceAccount apply to every Pod that
runs as it; the same annotation on the Pod wins. ``PREFIX/skip-containers`` names a Pod's own
containers, so it stays per Pod (on a ServiceAccount it is ignored, with a warning). Pure, as the
rest of the core: the server layer reads the ServiceAccount (a cache, else a GET) and passes what it
found, or why it could not, as an :class:`AccountAnnotations`; the core never holds a client.

Every message about a value that came from the ServiceAccount says so ("annotation
token-projector.io/audience from ServiceAccount api/api is ..."), because the person reading it
looks at the Pod and would not find the value there.
"""

from collections.abc import Mapping
from typing import NamedTuple

from webhook.core.annotations import TokenSpec, read_token_spec
from webhook.core.contract import AUDIENCE_KEY, EXPIRATION_KEY, PROTECT_KEYS, SKIP_CONTAINERS_KEY, Contract
from webhook.core.kubernetes import MIRROR_POD_ANNOTATION
from webhook.core.messages import shown
from webhook.core.pod import service_account_of
from webhook.errors import Denied

NAMESPACE_LABEL = "token-projector.io/service-accounts"
"""A namespace labelled ``token-projector.io/service-accounts: enabled`` sends all its Pods to the webhook,
whose review then applies their ServiceAccounts' annotations (docs/serviceaccount-opt-in.md)."""
NAMESPACE_LABEL_VALUE = "enabled"
SERVICE_ACCOUNTS_PATH = "/mutate/service-accounts"
"""Where the webhook entry for those namespaces calls: the server serves it, registration and manifests name it."""

INHERITED_KEYS = (AUDIENCE_KEY, EXPIRATION_KEY)
"""The annotations a ServiceAccount may set for its Pods (``skip-containers`` names a Pod's containers)."""


class AccountAnnotations(NamedTuple):
    """A ServiceAccount's annotations as the server found them; ``annotations`` is None when unreadable."""

    namespace: str
    name: str
    annotations: Mapping[str, str] | None
    unreadable_because: str = ""
    """Why it could not be read (no token, no value in it): said to the person whose Pod is refused."""

    @property
    def where(self) -> str:
        return f"ServiceAccount {self.namespace}/{self.name}"


def account_of_review(body: object) -> tuple[str, str] | None:
    """The (namespace, name) of the ServiceAccount a review of ``body`` reads, or None if it reads none.

    Only a Pod CREATE (not a mirror Pod) is reviewed with a ServiceAccount. This looks defensively:
    a malformed body gives None here, and the review itself then says what is wrong with it.
    """
    request = body.get("request") if isinstance(body, dict) else None
    if not isinstance(request, dict) or request.get("operation") != "CREATE" or request.get("subResource"):
        return None
    resource, pod = request.get("resource"), request.get("object")
    if not isinstance(resource, dict) or resource.get("group") != "" or resource.get("resource") != "pods":
        return None
    namespace = request.get("namespace")
    if not isinstance(namespace, str) or not namespace or not isinstance(pod, dict):
        return None
    spec, metadata = pod.get("spec"), pod.get("metadata")
    if not isinstance(spec, dict) or (metadata is not None and not isinstance(metadata, dict)):
        return None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if isinstance(annotations, dict) and MIRROR_POD_ANNOTATION in annotations:
        return None
    name: object = service_account_of(pod)  # not a string in a malformed Pod: the review refuses that one
    return (namespace, name) if isinstance(name, str) else None


def token_annotations(annotations: Mapping[str, str], contract: Contract) -> dict[str, str]:
    """Only the annotations under the prefix: what a cache keeps of a ServiceAccount (never anything else)."""
    prefix = contract.annotation_prefix + "/"
    return {key: value for key, value in annotations.items() if key.startswith(prefix) and isinstance(value, str)}


def read_with_account(
    annotations: dict[str, str], account: AccountAnnotations | None, contract: Contract
) -> tuple[TokenSpec | None, list[str], str]:
    """The Pod's token request with its ServiceAccount's annotations under its own, warnings, and where from.

    The third value is ``""`` when nothing came from the ServiceAccount, else its ``where``. Raises
    ``Denied`` for a bad value (naming the ServiceAccount when the value is its), and, fail closed,
    when the ServiceAccount could not be read and could have set a value the Pod does not.
    """
    if account is None:
        return read_token_spec(annotations, contract), [], ""
    pod_sets = {key for key in INHERITED_KEYS if contract.annotation(key) in annotations}
    if account.annotations is None:
        if len(pod_sets) < len(INHERITED_KEYS):
            raise unreadable(account, missing=[k for k in INHERITED_KEYS if k not in pod_sets], contract=contract)
        return read_token_spec(annotations, contract), [], ""
    warnings, inherited, merged = [], [], dict(annotations)
    for key, value in sorted(token_annotations(account.annotations, contract).items()):
        short = key[len(contract.annotation_prefix) + 1 :]
        if short not in INHERITED_KEYS:
            why = (
                "it names a Pod's containers, so it belongs on the Pod (template)"
                if short == SKIP_CONTAINERS_KEY
                else "it asks for the verifying proxy before a Pod's port, so it belongs on the Pod (template)"
                if short in PROTECT_KEYS
                else "it is not one token-projector knows"
            )
            warnings.append(f"annotation {key} on {account.where} was ignored: {why}")
        elif key in annotations:
            if annotations[key] != value:
                warnings.append(
                    f"annotation {key} is {shown(annotations[key])} on the Pod and {shown(value)} on "
                    f"{account.where}; the Pod's value wins"
                )
        else:
            merged[key] = value
            inherited.append(key)
    if inherited and contract.annotation(AUDIENCE_KEY) not in merged:
        # An expiration alone does not opt a Pod in: without an audience there is no token to time.
        inherited = []
        merged = dict(annotations)
    try:
        spec = read_token_spec(merged, contract)
    except Denied as denial:
        raise _attributed(denial, inherited, account) from None
    return spec, warnings, account.where if inherited else ""


def unreadable(account: AccountAnnotations, *, missing: list[str], contract: Contract) -> Denied:
    """The refusal of a Pod whose ServiceAccount could not be read: it is never admitted without its token."""
    names = " and ".join(contract.annotation(key) for key in missing)
    return Denied(
        f"token-projector could not read {account.where}, which may set this Pod's {names}: "
        f"{account.unreadable_because or 'no answer'}. The Pod is refused rather than started without the "
        "token its ServiceAccount may ask for; retry, and if it persists check token-projector's logs and "
        "its RBAC (get, list, watch on serviceaccounts), or set those annotations on the Pod itself",
        code=503,
        reason="ServiceUnavailable",
    )


def _attributed(denial: Denied, inherited: list[str], account: AccountAnnotations) -> Denied:
    """``denial`` with each inherited annotation it names said to be the ServiceAccount's."""
    message = denial.message
    for key in inherited:
        message = message.replace(f"annotation {key} ", f"annotation {key} from {account.where} ", 1)
    return Denied(message, code=denial.code, reason=denial.reason)
