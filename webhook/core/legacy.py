"""The legacy-token policy: find Secret-backed service account tokens in a Pod, and refuse or warn.

A legacy token lives in a Secret, never expires and is not bound to an audience: whoever reads
it can replay it anywhere, forever. We recognise one from the Pod alone (no API lookups, so the
check stays pure and fast): a ``secret`` volume mounted where the kubelet puts the API token, or
a ``secret`` volume named the way the old token controller named token Secrets. The modern
``kube-api-access-*`` projected volume is not legacy; ``strict`` mode refuses it too for Pods
that asked for an audience token, since they need no Kubernetes API credential.
"""

import re
from dataclasses import dataclass

from webhook.core.contract import AUDIENCE_KEY, Contract
from webhook.core.kubernetes import SERVICE_ACCOUNT_MOUNT_PATH
from webhook.core.pod import containers_of, same_path, service_account_of, token_sources, volumes_of
from webhook.core.wire import Json
from webhook.errors import Denied

_TOKEN_SECRET_SUFFIX = re.compile(r"-token-[a-z0-9]{5}")
"""The token controller named Secrets <serviceaccount>-token-<5 random characters>."""


@dataclass(frozen=True, kw_only=True)
class LegacyToken:
    volume: str
    secret: str
    mounted_in: tuple[str, ...]
    at_api_path: bool


def find_legacy_tokens(pod: Json) -> list[LegacyToken]:
    """The Pod's Secret-backed service account token volumes."""
    found = []
    account = service_account_of(pod)
    for volume in volumes_of(pod):
        secret = volume.get("secret")
        if not isinstance(secret, dict):
            continue
        secret_name = str(secret.get("secretName") or "")
        mounts = [
            (container["name"], mount["mountPath"])
            for _, _, container in containers_of(pod)
            for mount in container.get("volumeMounts") or ()
            if mount["name"] == volume["name"]
        ]
        at_api_path = any(same_path(path, SERVICE_ACCOUNT_MOUNT_PATH) for _, path in mounts)
        named_like_token = (
            secret_name.startswith(account) and _TOKEN_SECRET_SUFFIX.fullmatch(secret_name, len(account)) is not None
        )
        if at_api_path or named_like_token:
            mounted_in = tuple(dict.fromkeys(name for name, _ in mounts))
            found.append(
                LegacyToken(volume=volume["name"], secret=secret_name, mounted_in=mounted_in, at_api_path=at_api_path)
            )
    return found


def find_api_token_volumes(pod: Json) -> list[str]:
    """Volumes that give the Pod a Kubernetes API credential (kube-api-access-* and the like)."""
    # No audience means the API server's own audiences: an API credential.
    return [
        volume["name"]
        for volume in volumes_of(pod)
        if any(not token.get("audience") for token in token_sources(volume))
    ]


def apply_policy(pod: Json, *, audiences: tuple[str, ...] | None, contract: Contract) -> list[str]:
    """Apply the legacy-token policy to ``pod``; ``audiences`` is ``None`` for a Pod that did not opt in.

    Raises ``Denied`` when the policy refuses the Pod; otherwise returns the warnings to attach.
    """
    in_scope = audiences is not None or contract.legacy_token_scope == "all"
    warnings: list[str] = []
    if in_scope and contract.legacy_token_policy != "off":
        legacy = find_legacy_tokens(pod)
        if legacy and contract.legacy_token_policy == "deny":
            raise Denied(_legacy_message(legacy, audiences=audiences, contract=contract))
        warnings += [
            f"volume {token.volume!r} carries the legacy service account token Secret {token.secret!r}, "
            "which never expires; remove it (see token-projector's README)"
            for token in legacy
        ]
    if audiences is not None and contract.strict:
        api_volumes = find_api_token_volumes(pod)
        if api_volumes:
            raise Denied(
                f"Pod still automounts the Kubernetes API token (volume {', '.join(map(repr, api_volumes))}), "
                f"and this cluster's token-projector runs in strict mode: a Pod that asks for an audience "
                f"token should not also hold an API credential. Fix: set automountServiceAccountToken: false "
                f"in the Pod spec (or on its ServiceAccount); {_tokens_stay(audiences, contract)}."
            )
    return warnings


def _tokens_stay(audiences: tuple[str, ...], contract: Contract) -> str:
    if len(audiences) == 1:
        return f"the {audiences[0]!r} token stays at {contract.token_path}"
    return f"the tokens for {', '.join(map(repr, audiences))} stay in {contract.token_dir}"


def _legacy_message(legacy: list[LegacyToken], *, audiences: tuple[str, ...] | None, contract: Contract) -> str:
    described = []
    for token in legacy:
        where = (
            f"mounted at {SERVICE_ACCOUNT_MOUNT_PATH}"
            if token.at_api_path
            else "named like a service account token Secret"
        )
        containers = f" in container {', '.join(map(repr, token.mounted_in))}" if token.mounted_in else ""
        described.append(f"volume {token.volume!r} (Secret {token.secret!r}, {where}{containers})")
    fix = (
        "Fix: remove the volume and its volumeMounts; if it was mounted automatically, set "
        "automountServiceAccountToken: false on the Pod or its ServiceAccount."
    )
    if audiences is None:
        opt_in = contract.annotation(AUDIENCE_KEY)
        instead = f" For service-to-service calls, annotate the Pod with {opt_in}: <audience>."
    elif len(audiences) == 1:
        instead = f" Once fixed, the Pod gets its {audiences[0]!r} token at {contract.token_path}."
    else:
        instead = f" Once fixed, the Pod gets its tokens for {', '.join(map(repr, audiences))} in {contract.token_dir}."
    return (
        f"Pod uses a legacy service account token: {'; '.join(described)}. Legacy tokens never expire "
        "and are not bound to an audience, so anyone who reads one can replay it anywhere. " + fix + instead
    )
