"""The ``token-projector`` command: review offline, serve, make certificates, register.

Each subcommand parses its settings here, once, and hands frozen dataclasses to the module that
does the work; the server, certificate and cluster modules are imported only by the subcommand
that needs them, so ``review`` starts fast and needs no TLS files or cluster.
"""

import argparse
import base64
import copy
import sys
from collections.abc import Sequence
from typing import Any

import jsonpatch
import orjson

from webhook import __version__
from webhook.errors import ConfigError, TokenProjectorError
from webhook.review import review_body
from webhook.settings import Contract, ServerSettings, add_arguments, load

EXIT_DENIED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as error:
        print(f"token-projector: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TokenProjectorError as error:
        print(f"token-projector: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="token-projector",
        description="Mutating admission webhook that gives annotated Pods an audience-bound service account token.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    cmd = commands.add_parser(
        "review",
        help="answer an AdmissionReview file offline, as the webhook would",
        description="Answer an AdmissionReview offline and print the response (exit 0 allowed, 1 denied, 2 bad input).",
    )
    cmd.add_argument("file", help="AdmissionReview JSON file, or - for standard input")
    shown = cmd.add_mutually_exclusive_group()
    shown.add_argument("--pod", action="store_true", help="print the Pod as it would be after the patch")
    shown.add_argument("--patch", action="store_true", help="print the decoded JSON patch")
    add_arguments(cmd, Contract)
    cmd.set_defaults(run=_review)

    cmd = commands.add_parser("serve", help="run the HTTPS admission webhook")
    add_arguments(cmd, ServerSettings)
    add_arguments(cmd, Contract)
    cmd.set_defaults(run=_serve)

    from webhook.certs import add_cert_arguments  # small module, no heavy imports

    cmd = commands.add_parser("certs", help="write a CA and a serving certificate for the webhook")
    add_cert_arguments(cmd)
    cmd.set_defaults(run=_certs)

    from webhook.registration import add_register_arguments

    cmd = commands.add_parser("register", help="create or update the MutatingWebhookConfiguration")
    add_register_arguments(cmd)
    cmd.set_defaults(run=_register)
    return parser


def _review(args: argparse.Namespace) -> int:
    contract = load(Contract, args)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else _read_file(args.file)
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        print(f"token-projector: {args.file} is not JSON: {error}", file=sys.stderr)
        return EXIT_USAGE
    reviewed = review_body(raw, contract)  # from the bytes, exactly as the server answers
    response = reviewed.response["response"]
    if not response["allowed"]:
        print(f"denied: {response['status']['message']}", file=sys.stderr)
    for warning in response.get("warnings", ()):
        print(f"warning: {warning}", file=sys.stderr)
    output: Any = reviewed.response
    if args.pod or args.patch:
        ops = orjson.loads(base64.b64decode(response["patch"])) if "patch" in response else []
        # The Pod is copied because jsonpatch applies in place when asked to, and because the
        # printed Pod must be exactly the request's object with the ops applied, nothing else.
        output = ops if args.patch else jsonpatch.apply_patch(copy.deepcopy(body["request"]["object"]), ops)
    sys.stdout.write(orjson.dumps(output, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if response["allowed"] else EXIT_DENIED


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None


def _serve(args: argparse.Namespace) -> int:
    from webhook.server import serve

    serve(load(ServerSettings, args), load(Contract, args))
    return 0


def _certs(args: argparse.Namespace) -> int:
    from webhook.certs import run_certs

    return run_certs(args)


def _register(args: argparse.Namespace) -> int:
    from webhook.registration import run_register

    return run_register(args)
