"""``token-projector register``: create or update the MutatingWebhookConfiguration with our caBundle.

The object is built by a pure function (the same one ``manifests/`` is checked against), and written
with the official ``kubernetes`` client: created when missing, replaced when different, and left
alone, saying so, when it already matches. It is read and written as plain JSON, never through the
client's typed models, which would drop fields they do not know.
"""

import base64
import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography import x509

from webhook.core.contract import OPT_IN_KEYS, Contract
from webhook.core.kubernetes import SYSTEM_NAMESPACE
from webhook.core.service_accounts import NAMESPACE_LABEL, NAMESPACE_LABEL_VALUE, SERVICE_ACCOUNTS_PATH
from webhook.core.wire import Json
from webhook.errors import ClusterError, ConfigError
from webhook.install.deployment import (
    CONFIGURATION_NAME,
    NAMESPACE,
    OPT_OUT_LABEL,
    SERVICE_ACCOUNT_WEBHOOK_NAME,
    SERVICE_NAME,
    SERVICE_PORT,
    TIMEOUT_SECONDS,
    WEBHOOK_NAME,
)
from webhook.install.kubeclient import connect


def webhook_configuration(
    *,
    ca_bundle: str,
    contract: Contract,
    url: str | None = None,
    service: str = SERVICE_NAME,
    namespace: str = NAMESPACE,
    name: str = CONFIGURATION_NAME,
    service_account_opt_in: bool = False,
) -> Json:
    """The MutatingWebhookConfiguration, every defaultable field set, so a re-read compares equal.

    ``service_account_opt_in`` adds the second entry of manifests/components/service-account-opt-in.
    """
    client_config: Json = {"caBundle": ca_bundle}
    if url is None:
        client_config["service"] = {"name": service, "namespace": namespace, "path": "/mutate", "port": SERVICE_PORT}
    else:
        client_config["url"] = url
    webhook: Json = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1", "v1beta1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "reinvocationPolicy": "IfNeeded",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [SYSTEM_NAMESPACE, namespace]},
                {"key": OPT_OUT_LABEL, "operator": "NotIn", "values": ["true"]},
            ]
        },
        "objectSelector": {},
    }
    if contract.legacy_token_scope == "annotated":
        keys = ", ".join(f"'{contract.annotation(key)}'" for key in OPT_IN_KEYS)
        condition = f"has(object.metadata.annotations) && [{keys}].exists(k, k in object.metadata.annotations)"
        webhook["matchConditions"] = [{"name": "has-opt-in-annotation", "expression": condition}]
    webhooks = [webhook]
    if service_account_opt_in:
        webhooks.append(_service_account_entry(webhook, url=url))
        webhook["namespaceSelector"]["matchExpressions"].append(
            {"key": NAMESPACE_LABEL, "operator": "NotIn", "values": [NAMESPACE_LABEL_VALUE]}
        )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "token-projector"}},
        "webhooks": webhooks,
    }


def _service_account_entry(first: Json, *, url: str | None) -> Json:
    """The entry that sends every Pod of the namespaces labelled for ServiceAccount opt-in."""
    entry: Json = copy.deepcopy(first)
    entry["name"] = SERVICE_ACCOUNT_WEBHOOK_NAME
    entry.pop("matchConditions", None)  # a ServiceAccount's annotations are invisible to them
    entry["namespaceSelector"]["matchLabels"] = {NAMESPACE_LABEL: NAMESPACE_LABEL_VALUE}
    client = entry["clientConfig"]
    if url is None:
        client["service"]["path"] = SERVICE_ACCOUNTS_PATH
    else:
        parsed = urlparse(url)
        if parsed.path.rstrip("/") != "/mutate":
            raise ConfigError(f"--url {url!r}: with --service-account-opt-in the URL's path must be /mutate")
        client["url"] = parsed._replace(path=SERVICE_ACCOUNTS_PATH).geturl()
    return entry


def read_ca_bundle(path: Path) -> str:
    """The base64 caBundle of a PEM CA file; ``ConfigError`` if it is missing or not a CA certificate."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--ca-file {path}: {error.strerror}; make one with `token-projector certs`") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, x509.ExtensionNotFound):
        raise ConfigError(f"--ca-file {path} is not a PEM CA certificate") from None
    if not is_ca:
        raise ConfigError(f"--ca-file {path} is a certificate but not a CA (basicConstraints CA:FALSE)")
    return base64.b64encode(pem).decode("ascii")


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ConfigError(f"--url {url!r} must be an https:// URL with a host, e.g. https://192.168.1.10:8443/mutate")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ConfigError(
            f"--url {url!r} must not carry user info, a query or a fragment (the API server refuses them)"
        )
    return url


def is_up_to_date(existing: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is in ``existing`` with the same value (the API server adds more)."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(is_up_to_date(existing.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(is_up_to_date(e, d) for e, d in zip(existing, desired, strict=True))
        )
    return bool(existing == desired)


def apply_configuration(desired: Json, *, kubeconfig: str | None = None, context: str | None = None) -> str:
    """Create, replace or leave ``desired``; returns ``created``, ``updated`` or ``unchanged``."""
    kube = connect(kubeconfig=kubeconfig, context=context, command="register", extra="register")
    ApiException = kube.api_exception  # noqa: N806 -- the client's exception class, named as it names it
    host = kube.api_client.configuration.host
    # Any: we hand the client plain dicts and read raw JSON on purpose, bypassing its typed models.
    api: Any = kube.client.AdmissionregistrationV1Api(kube.api_client)
    name = desired["metadata"]["name"]
    timeout = 15
    try:
        try:
            raw = api.read_mutating_webhook_configuration(name, _preload_content=False, _request_timeout=timeout)
            existing: Json = json.loads(raw.data)
        except ApiException as error:
            if getattr(error, "status", None) != 404:
                raise
            api.create_mutating_webhook_configuration(desired, _preload_content=False, _request_timeout=timeout)
            return "created"
        if is_up_to_date(existing, desired):
            return "unchanged"
        body = {
            **desired,
            "metadata": {**desired["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]},
        }
        api.replace_mutating_webhook_configuration(name, body, _preload_content=False, _request_timeout=timeout)
        return "updated"
    except ApiException as error:
        raise ClusterError(_explain(error, host=host, name=name)) from None
    except kube.transport_errors as error:
        cause = getattr(error, "reason", None) or error  # urllib3 wraps the socket error in MaxRetryError
        raise ClusterError(f"cannot reach the Kubernetes API at {host}: {cause}") from None
    finally:
        kube.api_client.close()


def _explain(error: Any, *, host: str, name: str) -> str:
    reason = _status_message(error)
    if error.status in (401, 403):
        return (
            f"the Kubernetes API at {host} refused: {reason}. Registering needs get, create and update on "
            f"mutatingwebhookconfigurations.admissionregistration.k8s.io (name {name}): a cluster-admin, "
            "or a ClusterRole granting those verbs"
        )
    return f"the Kubernetes API at {host} answered {error.status}: {reason}"


def _status_message(error: Any) -> str:
    try:
        message = json.loads(error.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or error.reason or error)
