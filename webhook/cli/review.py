"""``token-projector review FILE``: answer an AdmissionReview offline, exactly as the server would."""

import argparse
import base64
import copy
import sys
from typing import Any

import orjson

from webhook.cli.exits import EXIT_DENIED, EXIT_USAGE
from webhook.cli.options import add_arguments, load
from webhook.core.contract import Contract
from webhook.core.review import review_body
from webhook.errors import ConfigError


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    contract = load(Contract, args)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else read_file(args.file)
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
        output = ops if args.patch else apply_patch(body["request"]["object"], ops)
    sys.stdout.write(orjson.dumps(output, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if response["allowed"] else EXIT_DENIED


def apply_patch(document: object, ops: list[Any]) -> Any:
    """``document`` with the JSON patch applied by jsonpatch, as the API server would apply it."""
    try:
        import jsonpatch
    except ImportError:
        raise ConfigError("review --pod needs jsonpatch: pip install 'token-projector[review]'") from None
    # The document is copied because jsonpatch applies in place when asked to, and because the
    # printed Pod must be exactly the request's object with the ops applied, nothing else.
    return jsonpatch.apply_patch(copy.deepcopy(document), ops)


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
