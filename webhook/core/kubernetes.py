"""Names and limits fixed by Kubernetes itself, not by us: so not settings, and kept together here."""

SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where the kubelet mounts the API token (legacy Secret or kube-api-access) in every container."""
SYSTEM_NAMESPACE = "kube-system"
"""The control plane's namespace: never sent to the webhook or its policies (their Pods must always start)."""
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
"""Marks a static Pod's mirror; the API server forbids mirror Pods any service account token."""
MIN_EXPIRATION_SECONDS = 600
"""The API server rejects a serviceAccountToken projection with expirationSeconds below this."""
MAX_EXPIRATION_SECONDS_LIMIT = 2**32
"""The API server rejects a serviceAccountToken projection with expirationSeconds above this."""
DEFAULT_EXPIRATION_SECONDS = 3600
"""What the API server defaults a projection's missing expirationSeconds to."""
