"""Every error token-projector raises, in one small tree::

    TokenProjectorError
    ├── ConfigError              settings that cannot work; the command exits with status 2
    ├── RequestError             the HTTP request is unusable; the server answers ``status``
    │   ├── InvalidReview            400: not an AdmissionReview with a request and a uid
    │   ├── RequestTimeout           408: the body did not arrive in time
    │   ├── PayloadTooLarge          413: the body is over the configured limit
    │   ├── UnsupportedMediaType     415: the body is not declared as JSON
    │   └── ServiceAccountOptInOff   404: /mutate/service-accounts called while that mode is off
    ├── Denied                   the Pod is refused: an ``allowed: false`` answer, never an HTTP error
    ├── CertificateError         TLS material missing, unreadable or not a matching pair
    └── ClusterError             the Kubernetes API refused or could not be reached

The server maps ``RequestError`` to HTTP in one place (``RequestError.status``); everything
else that escapes a handler is a bug, logged and answered as a plain 500 without details.

A leaf module, imported by every layer and importing nothing of ours. The helpers that build
messages from client values live beside the code that builds messages (``webhook.core.messages``).
"""

from typing import ClassVar


class TokenProjectorError(Exception):
    """The root of token-projector's errors."""


class ConfigError(TokenProjectorError):
    """A setting has a value that cannot work; the message names the setting."""


class RequestError(TokenProjectorError):
    """The request cannot be reviewed; ``status`` is the HTTP status the server answers."""

    status: ClassVar[int] = 400


class InvalidReview(RequestError):
    """The body is not an AdmissionReview we can answer; the message says where and why."""

    status = 400


class RequestTimeout(RequestError):
    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class ServiceAccountOptInOff(RequestError):
    status = 404


class Denied(TokenProjectorError):
    """The Pod is refused. ``code`` and ``reason`` become the metav1.Status the user sees."""

    def __init__(self, message: str, *, code: int = 403, reason: str = "Forbidden") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


class CertificateError(TokenProjectorError):
    """TLS material is missing, unreadable, or the certificate does not match the key."""


class ClusterError(TokenProjectorError):
    """The Kubernetes API could not be reached or refused what we asked."""
