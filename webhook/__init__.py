"""token-projector: gives annotated Pods an audience-bound, expiring service account token.

The package is a pure core (:mod:`webhook.review` and the modules it calls: plain dicts in,
plain dicts out, no I/O) behind thin shells: the HTTPS server (:mod:`webhook.server`), the
command line (:mod:`webhook.cli`), certificate tooling (:mod:`webhook.certs`) and cluster
registration (:mod:`webhook.register`).
"""

__version__ = "0.1.0"
