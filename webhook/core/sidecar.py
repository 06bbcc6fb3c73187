"""The verifying proxy as a native sidecar: read a Pod's protect annotations, refuse what cannot work, plan the op.

A Pod annotated ``PREFIX/protect-port`` (a port one of its containers declares, by name or number),
``PREFIX/protect-audience`` (the audience callers' tokens must be for) and ``PREFIX/protect-allow``
(the callers let in, ``NAMESPACE/SERVICEACCOUNT`` patterns) gets ``token-projector proxy`` as an init
container with ``restartPolicy: Always``: it listens on ``Contract.proxy_port`` (the container port
named ``token-proxy``, which the Service targets), verifies each caller and forwards to the app on
``127.0.0.1``. Its TokenReview credential is the Pod's own service account token: the API token
volume the ServiceAccount admission plugin added is mounted into it explicitly, read-only.

Everything that would make the Pod fail later is refused here, naming the annotation and the fix: a
port the Pod does not declare, an audience the API server owns, a missing allow list, a port the
proxy needs that the Pod already uses, no service account token to review with, a cluster without
native sidecars. The plan is one ``add`` op, and none for a Pod that already has the proxy (as on
re-invocation): idempotent like everything the webhook adds. Pure, as the rest of the core.
"""

import re
from typing import NamedTuple

from webhook.core.annotations import check_audience
from webhook.core.contract import (
    AUDIENCE_KEY,
    PROTECT_ALLOW_KEY,
    PROTECT_AUDIENCE_KEY,
    PROTECT_KEYS,
    PROTECT_PORT_KEY,
    Contract,
)
from webhook.core.kubernetes import SERVICE_ACCOUNT_MOUNT_PATH
from webhook.core.legacy import find_api_token_volumes
from webhook.core.messages import invalid, shown
from webhook.core.pod import annotations_of, containers_of, same_path, service_account_of
from webhook.core.wire import AddOp, Json
from webhook.errors import Denied

PROXY_CONTAINER = "token-projector-proxy"
PORT_NAME = "token-proxy"
"""The proxy's container port: a Service's ``targetPort: token-proxy`` sends callers through it."""
PROBE_PORT_NAME = "proxy-probes"
PROXY_COMMAND = ["token-projector", "proxy"]
"""The image's entrypoint is ``token-projector serve``: the sidecar names its own command."""
RESOURCES: Json = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
"""The proxy's resident memory is about 40 MiB under load (docs/proxy.md, the benchmark)."""
RUN_AS = 65532
"""The image's non-root user, as the webhook's own Deployment runs it."""

_DIGITS = re.compile(r"[0-9]{1,5}")
_PORT_NAME = re.compile(r"(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*")
"""IANA_SVC_NAME, as the API server validates a container port's name."""
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SERVICE_ACCOUNT = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
"""What ``audience_token``'s AllowPattern accepts (it may not be imported here; a test holds them equal)."""


class Protection(NamedTuple):
    """What a Pod asked the proxy to protect, read and checked from its annotations."""

    port: int
    """The app's container port: the proxy forwards to ``127.0.0.1:port``."""
    audience: str
    allow: tuple[str, ...]


def asks_for_proxy(annotations: dict[str, str], contract: Contract) -> bool:
    """Whether any of the protect annotations is set: then all three must be right."""
    return any(contract.annotation(key) in annotations for key in PROTECT_KEYS)


def read_protection(pod: Json, annotations: dict[str, str], contract: Contract) -> Protection | None:
    """The Pod's request for the proxy, ``None`` when it made none; raises ``Denied`` for what cannot work."""
    if not asks_for_proxy(annotations, contract):
        return None
    port_key = contract.annotation(PROTECT_PORT_KEY)
    if not contract.native_sidecars:
        raise invalid(
            f"the Pod asks for the verifying proxy ({', '.join(_set(annotations, contract))}), which token-projector "
            "adds as a native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+), and this "
            "cluster's token-projector runs with --no-native-sidecars (an older API server would drop the "
            "restartPolicy and the Pod would never start). Fix: add the proxy as a container of your own "
            "(docs/proxy.md, 'Running it'), or remove the annotations until the cluster runs Kubernetes 1.29+"
        )
    if pod["spec"].get("hostNetwork") is True:
        raise invalid(
            f"the Pod asks for the verifying proxy ({', '.join(_set(annotations, contract))}) and sets "
            "hostNetwork: true; the proxy forwards to the app on 127.0.0.1, which for a host-network Pod is the "
            "node's loopback, open to every process and host-network Pod on the node: they could call the app "
            "directly, with forged X-Remote-* headers, and never meet the proxy. Fix: run the Pod on the Pod "
            "network (remove hostNetwork), where the app's loopback is the Pod's own"
        )
    for key in PROTECT_KEYS:
        if contract.annotation(key) not in annotations:
            raise invalid(_missing(key, annotations, contract))
    port = _declared_port(pod, annotations[port_key], key=port_key)
    audience_key = contract.annotation(PROTECT_AUDIENCE_KEY)
    audience = annotations[audience_key]
    if "," in audience:
        raise invalid(
            f"annotation {audience_key} is {shown(audience)}, a list; the proxy verifies one audience, "
            f"this service's own: e.g. {audience_key}: secret-store"
        )
    check_audience(audience, key=audience_key, contract=contract)
    allow = _allow(annotations[contract.annotation(PROTECT_ALLOW_KEY)], key=contract.annotation(PROTECT_ALLOW_KEY))
    return Protection(port=port, audience=audience, allow=allow)


def plan_proxy(pod: Json, protection: Protection, *, contract: Contract, asks_for_token: bool) -> list[AddOp]:
    """The op that adds the proxy to ``pod`` (none when it is there); raises ``Denied`` on a conflict."""
    existing = next((c for _, _, c in containers_of(pod) if c["name"] == PROXY_CONTAINER), None)
    wanted = proxy_container(protection, contract=contract, api_volume=_api_volume(pod, contract, asks_for_token))
    _check_ports(pod, protection, contract=contract)
    if existing is not None:
        if _is_proxy(existing, wanted):
            return []
        raise invalid(
            f"the Pod already has a container named {PROXY_CONTAINER!r} that is not the proxy its annotations "
            f"({', '.join(_set(annotations_of(pod), contract))}) ask for; token-projector needs that name for it: "
            "rename that container, or remove it and let the webhook add the proxy"
        )
    init = pod["spec"].get("initContainers")
    if init is None:
        return [{"op": "add", "path": "/spec/initContainers", "value": [wanted]}]
    return [{"op": "add", "path": "/spec/initContainers/-", "value": wanted}]


def proxy_container(protection: Protection, *, contract: Contract, api_volume: str) -> Json:
    """The sidecar, as it is added to the Pod: restricted, probed, resourced, with the Pod's API token only."""
    args = [
        f"--upstream=http://127.0.0.1:{protection.port}",
        f"--audience={protection.audience}",
        f"--allow={','.join(protection.allow)}",
        f"--port={contract.proxy_port}",
        f"--probe-port={contract.proxy_probe_port}",
    ]
    return {
        "name": PROXY_CONTAINER,
        "image": contract.proxy_image,
        "command": list(PROXY_COMMAND),
        "args": args,
        "restartPolicy": "Always",
        "ports": [
            {"name": PORT_NAME, "containerPort": contract.proxy_port, "protocol": "TCP"},
            {"name": PROBE_PORT_NAME, "containerPort": contract.proxy_probe_port, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": PROBE_PORT_NAME},
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PROBE_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": api_volume, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH, "readOnly": True}],
    }


def has_proxy_container(pod: Json) -> bool:
    return any(container["name"] == PROXY_CONTAINER for _, _, container in containers_of(pod))


def _is_proxy(existing: Json, wanted: Json) -> bool:
    """True for the proxy as we add it, also after the API server defaulted fields into it."""
    return all(existing.get(key) == wanted[key] for key in ("image", "command", "args", "restartPolicy"))


def _set(annotations: dict[str, str], contract: Contract) -> list[str]:
    return [contract.annotation(key) for key in PROTECT_KEYS if contract.annotation(key) in annotations]


def _missing(key: str, annotations: dict[str, str], contract: Contract) -> str:
    name = contract.annotation(key)
    asked = f"the Pod asks for the verifying proxy ({', '.join(_set(annotations, contract))}) without {name}"
    if key == PROTECT_ALLOW_KEY:
        return (
            f"{asked}: list the callers to let in, as NAMESPACE/SERVICEACCOUNT patterns, e.g. {name}: api/api "
            "(write */* to let in every service account of the cluster: a choice to make, not a default)"
        )
    if key == PROTECT_AUDIENCE_KEY:
        return f"{asked}: name the audience callers' tokens must be for, this service's own, e.g. {name}: secret-store"
    return f"{asked}: name the app's container port to protect, by name or number, e.g. {name}: http"


def _declared_port(pod: Json, value: str, *, key: str) -> int:
    """The container port ``value`` names (a name or a number the Pod declares); raises ``Denied`` otherwise."""
    is_number = _DIGITS.fullmatch(value) is not None
    if not is_number and _PORT_NAME.fullmatch(value) is None:
        raise invalid(
            f"annotation {key} is {shown(value)}, neither a port number nor a port name; name the app's "
            f"container port, e.g. {key}: http or {key}: 8080"
        )
    declared = []
    for _, _, container in containers_of(pod):
        if container["name"] == PROXY_CONTAINER:
            continue
        for port in _ports_of(container):
            number, name = port.get("containerPort"), port.get("name")
            if type(number) is not int:
                continue
            declared.append(f"{name} ({number})" if isinstance(name, str) and name else str(number))
            if (is_number and number == int(value)) or (not is_number and name == value):
                protocol = port.get("protocol") or "TCP"
                if protocol != "TCP":
                    raise invalid(
                        f"annotation {key} is {shown(value)}, a {shown(protocol)} port of container "
                        f"{container['name']!r}; the proxy speaks HTTP over TCP: name a TCP port"
                    )
                return number
    raise _undeclared(value, key=key, declared=declared)


def _undeclared(value: str, *, key: str, declared: list[str]) -> Denied:
    ports = ", ".join(declared) if declared else "none"
    return invalid(
        f"annotation {key} is {shown(value)}, a port no container of the Pod declares (declared: {ports}); "
        "declare the app's port in its container, e.g. ports: [{name: http, containerPort: 8080}], and name it "
        f"here, e.g. {key}: http"
    )


def _ports_of(container: Json) -> list[Json]:
    ports = container.get("ports")
    if type(ports) is not list:
        return []
    return [port for port in ports if type(port) is dict]


def _allow(value: str, *, key: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in value.split(",") if part.strip())
    if not patterns:
        raise invalid(
            f"annotation {key} is {shown(value)}, no caller; list the callers to let in as NAMESPACE/SERVICEACCOUNT "
            f"patterns, e.g. {key}: api/api (write */* to let in every service account of the cluster)"
        )
    for pattern in patterns:
        parts = pattern.split("/")
        if (
            len(parts) != 2
            or not (parts[0] == "*" or _NAMESPACE.fullmatch(parts[0]))
            or not (parts[1] == "*" or _SERVICE_ACCOUNT.fullmatch(parts[1]))
        ):
            raise invalid(
                f"annotation {key}: {shown(pattern)} is not a NAMESPACE/SERVICEACCOUNT pattern; each part is a "
                "name or * (the whole part, not a glob), e.g. api/api, api/* or */*"
            )
    return patterns


def _check_ports(pod: Json, protection: Protection, *, contract: Contract) -> None:
    """No container but the proxy declares a port number or a port name the proxy needs."""
    port_key = contract.annotation(PROTECT_PORT_KEY)
    ours = {contract.proxy_port: "proxy_port", contract.proxy_probe_port: "proxy_probe_port"}
    for _, _, container in containers_of(pod):
        if container["name"] == PROXY_CONTAINER:
            continue
        for port in _ports_of(container):
            number, name = port.get("containerPort"), port.get("name")
            if type(number) is int and number in ours:
                setting = ours[number]
                app = " (the port it protects)" if number == protection.port else ""
                raise invalid(
                    f"annotation {port_key}: the proxy listens on port {number} (this cluster's "
                    f"--{setting.replace('_', '-')}), and container {container['name']!r} declares port {number}{app}; "
                    "containers of one Pod share its ports: move the app to another port (listening on 127.0.0.1 "
                    "only, behind the proxy), or ask the cluster's admins for another "
                    f"--{setting.replace('_', '-')}"
                )
            if name in (PORT_NAME, PROBE_PORT_NAME):
                raise invalid(
                    f"annotation {port_key}: container {container['name']!r} declares a port named {name!r}, the "
                    "name of the proxy's own port (a Service's targetPort finds it by that name); rename that port"
                )


def _api_volume(pod: Json, contract: Contract, asks_for_token: bool) -> str:
    """The volume of the Pod's own service account token, which the proxy's TokenReviews use."""
    if asks_for_token and contract.strict:
        raise Denied(
            f"the Pod asks for an audience token ({contract.annotation(AUDIENCE_KEY)}) and for the verifying proxy "
            f"({contract.annotation(PROTECT_PORT_KEY)}), and this cluster's token-projector runs in strict mode: "
            "a Pod that asks for an audience token may hold no Kubernetes API credential, and the proxy needs the "
            "Pod's service account token for its TokenReviews. Fix: run the caller and the protected service in "
            "separate Pods, or remove one of the two requests"
        )
    volumes = find_api_token_volumes(pod)
    mounted = {
        mount["name"]
        for _, _, container in containers_of(pod)
        for mount in container.get("volumeMounts") or ()
        if same_path(mount["mountPath"], SERVICE_ACCOUNT_MOUNT_PATH)
    }
    chosen = next((v for v in volumes if v in mounted), volumes[0] if volumes else None)
    if chosen is not None:
        return chosen
    automount = pod["spec"].get("automountServiceAccountToken")
    why = (
        "the Pod sets automountServiceAccountToken: false"
        if automount is False
        else f"its ServiceAccount {service_account_of(pod)!r} sets automountServiceAccountToken: false"
    )
    raise invalid(
        f"annotation {contract.annotation(PROTECT_PORT_KEY)}: the verifying proxy asks the API server about each "
        f"caller's token with the Pod's own service account token, and the Pod does not mount it ({why}). "
        "Fix: set automountServiceAccountToken: true in the Pod spec, and bind the Pod's ServiceAccount to the "
        "audience-token-reviewer ClusterRole (docs/proxy.md)"
    )
