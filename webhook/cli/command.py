"""``main``: builds the parser from every command module and maps errors to exit codes, once."""

import argparse
import sys
from collections.abc import Sequence

from webhook import __version__
from webhook.cli import audit, certs, policy, proxy, register, review, serve, token
from webhook.cli.exits import EXIT_USAGE
from webhook.errors import ConfigError, TokenProjectorError

COMMANDS = (review, serve, certs, register, token, audit, proxy, policy)
"""In the order ``--help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as error:
        print(f"token-projector: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TokenProjectorError as error:
        print(f"token-projector: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="token-projector",
        description="Mutating admission webhook that gives annotated Pods an audience-bound service account token.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return top
