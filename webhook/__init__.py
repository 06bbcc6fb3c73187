"""token-projector: gives annotated Pods an audience-bound, expiring service account token.

The package is layered, and each layer imports only those below it:

- :mod:`webhook.core`: the admission decision, pure (plain dicts in, plain dicts out, no I/O);
  its entry point is :func:`webhook.core.review.review_body`.
- :mod:`webhook.server`: the HTTPS admission server around the core.
- :mod:`webhook.install`: certificates and cluster registration.
- :mod:`webhook.cli`: the ``token-projector`` command, the only layer that reads flags and the
  environment.

:mod:`webhook.errors` is the one exception tree, shared by every layer.
"""

__version__ = "0.2.0"
