"""audience_token: send and check Kubernetes audience-bound service account tokens between services.

A caller reads the token its Pod was given (``TokenFile``) and sends it (``bearer_auth`` for an aiohttp
``ClientSession``, or ``TokenFile.headers()`` for any client). A receiver checks it for its own audience
with the TokenReview API (``TokenReviewer``; ``protect(app, reviewer)`` puts it in front of an aiohttp app) or,
optionally, offline from the cluster's published keys (``OfflineVerifier``, extra ``offline``). Both
verifiers answer the same ``Identity`` or raise the same errors (see ``audience_token.errors``).

The package is a framework-neutral core (the policy, the verifiers, their cache and transport, the
token files, the answers a receiver gives) with one thin module per framework adapter:
``audience_token.middleware`` (aiohttp's server) and ``audience_token.client`` (aiohttp's client).
The adapters, the caller side and the offline verifier are imported on first use, so that a receiver
does not load the caller side, a service on another framework does not load aiohttp's server, and the
offline mode's JOSE library stays an optional extra.
"""

from typing import TYPE_CHECKING, Any

from audience_token.answers import Verifier
from audience_token.errors import (
    AudienceTokenError,
    ConfigError,
    NotAllowed,
    ReviewUnavailable,
    TokenFileError,
    Unauthenticated,
    VerificationError,
)
from audience_token.identity import AllowList, AllowPattern, Identity
from audience_token.kube import Credentials
from audience_token.reviewer import ReviewerSettings, TokenReviewer

if TYPE_CHECKING:
    from audience_token.client import bearer_auth
    from audience_token.middleware import IDENTITY, identity_of, protect, token_middleware
    from audience_token.offline import OfflineVerifier
    from audience_token.token_file import TokenFile

__version__ = "0.2.0"

_LAZY = {
    "TokenFile": "audience_token.token_file",
    "bearer_auth": "audience_token.client",
    "OfflineVerifier": "audience_token.offline",
    # The aiohttp server adapter: loaded on first use, so that a service on another framework that
    # imports audience_token does not load aiohttp's server.
    "IDENTITY": "audience_token.middleware",
    "identity_of": "audience_token.middleware",
    "protect": "audience_token.middleware",
    "token_middleware": "audience_token.middleware",
}

__all__ = [
    "IDENTITY",
    "AllowList",
    "AllowPattern",
    "AudienceTokenError",
    "ConfigError",
    "Credentials",
    "Identity",
    "NotAllowed",
    "OfflineVerifier",
    "ReviewUnavailable",
    "ReviewerSettings",
    "TokenFile",
    "TokenFileError",
    "TokenReviewer",
    "Unauthenticated",
    "VerificationError",
    "Verifier",
    "bearer_auth",
    "identity_of",
    "protect",
    "token_middleware",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'audience_token' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
