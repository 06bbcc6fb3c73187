"""``token-projector serve``: run the HTTPS admission webhook with settings from flags and the environment."""

import argparse

from webhook.cli.options import add_arguments, load
from webhook.core.contract import Contract
from webhook.server.settings import ServerSettings


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmd = commands.add_parser("serve", help="run the HTTPS admission webhook")
    add_arguments(cmd, ServerSettings)
    add_arguments(cmd, Contract)
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.server.app import serve  # aiohttp and the TLS stack: only this command needs them

    serve(load(ServerSettings, args), load(Contract, args))
    return 0
