"""What an install of token-projector is named and made of, as in ``manifests/``: defined once.

The certificate's default DNS names and files, the webhook configuration's Service reference and
its namespace exclusion all follow from these; a test keeps them equal to the manifests. No
imports: the command line reads these for its defaults without loading the tools that use them.
"""

SERVICE_NAME = "token-projector"
"""The webhook's Service; the certificate's default DNS names derive from it."""
NAMESPACE = "token-projector"
"""The webhook's namespace (never sent to the webhook itself)."""
SERVICE_PORT = 443
CONFIGURATION_NAME = "token-projector"
"""The MutatingWebhookConfiguration's name."""
WEBHOOK_NAME = "audience-token.token-projector.io"
SERVICE_ACCOUNT_WEBHOOK_NAME = "service-account.token-projector.io"
"""The second entry, for namespaces with ServiceAccount opt-in (docs/serviceaccount-opt-in.md)."""
OPT_OUT_LABEL = "token-projector.io/opt-out"
"""A namespace labelled ``token-projector.io/opt-out: "true"`` is never sent to the webhook."""
TIMEOUT_SECONDS = 5
"""Well under the API server's default of 10: a review takes under a millisecond."""

CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "tls.crt", "tls.key"
"""File names as a kubernetes.io/tls Secret names its keys, so the folder can feed one directly."""
CA_VALIDITY_DAYS = 3650
"""The CA is only a trust anchor for the caBundle; re-registering a new one is the costly step."""
SERVING_VALIDITY_DAYS = 365
"""A year: long enough not to surprise, short enough that a leaked key expires; rotate with cert-manager."""
