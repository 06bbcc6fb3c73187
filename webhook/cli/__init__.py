"""The ``token-projector`` command line: the only layer that parses flags, reads the environment and prints.

One module per command (``review``, ``serve``, ``certs``, ``register``), each adding its own
sub-parser; :mod:`webhook.cli.command` assembles them. A command imports the layer it drives
(server, install tooling) only when it runs, so ``review`` needs no TLS library or cluster client.
"""

from webhook.cli.command import main

__all__ = ["main"]
