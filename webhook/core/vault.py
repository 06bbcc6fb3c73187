"""The Vault Agent injector beside token-projector: which Pods would send Vault their Kubernetes API token.

The injector (hashicorp/vault-k8s) gives its agent the Pod's Kubernetes API token unless the Pod
names a projected volume in ``vault.hashicorp.com/agent-service-account-token-volume-name``: then
the agent reads the token at that volume's mount, from the path of its first ``serviceAccountToken``
source. token-projector's volume is such a volume, so the recipe (docs/serviceaccount-opt-in.md) is
``PREFIX/audience: vault`` (the audience of Vault's Kubernetes auth role) and that annotation set to
token-projector's volume name. Pure: ``review`` and ``audit`` call it on what they already hold.
"""

from collections.abc import Mapping

from webhook.core.contract import Contract

AGENT_INJECT = "vault.hashicorp.com/agent-inject"
TOKEN_VOLUME_NAME = "vault.hashicorp.com/agent-service-account-token-volume-name"
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
"""What Go's strconv.ParseBool reads as true: the injector parses agent-inject with it."""


def vault_warnings(annotations: Mapping[str, str], *, has_token_volume: bool, contract: Contract) -> list[str]:
    """Warnings for a Pod whose Vault Agent would log in with the API token, or is pointed at a missing volume.

    ``has_token_volume`` says whether the Pod has token-projector's volume once the webhook has answered.
    """
    if annotations.get(AGENT_INJECT) not in _TRUE:
        return []
    volume = annotations.get(TOKEN_VOLUME_NAME)
    if not volume:
        return [
            f"annotation {AGENT_INJECT} is true without {TOKEN_VOLUME_NAME}: the Vault Agent will log in to "
            "Vault with the Pod's Kubernetes API token, a credential for the API server itself; give the Pod "
            f"{contract.annotation_prefix}/audience: vault (the audience of Vault's role) and "
            f"{TOKEN_VOLUME_NAME}: {contract.volume_name} (docs/serviceaccount-opt-in.md#vault)"
        ]
    if volume == contract.volume_name and not has_token_volume:
        return [
            f"annotation {TOKEN_VOLUME_NAME} names token-projector's volume {volume!r}, but the Pod gets no "
            f"token from token-projector: add {contract.annotation_prefix}/audience: vault to the Pod "
            "(or its ServiceAccount), else the Vault Agent injector cannot find the volume"
        ]
    return []
