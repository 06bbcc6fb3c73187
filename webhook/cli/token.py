"""``token-projector token inspect|review``: answer "why is my token refused?" from a shell.

``inspect`` decodes a token *without verifying it* and says what it claims: issuer, audiences, the
service account, the Pod and node it is bound to, when it expires; and, plainly, when it is a legacy
Secret token or a credential for the Kubernetes API rather than for a service. ``review`` asks the
cluster, exactly as a receiver using ``audience_token.TokenReviewer`` (or, with ``--offline``, the
``OfflineVerifier``) would, and prints the identity or the reason for the refusal.

Neither ever prints the token or its signature. The token comes from FILE, ``-`` (standard input) or,
by default, the file ``$SERVICE_ACCOUNT_TOKEN_PATH`` names (as ``audience_token.TokenFile`` reads it).
Exit codes: 0 decoded / accepted, 1 refused, 2 unusable input or no verdict.
"""

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from webhook.cli.exits import EXIT_DENIED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from audience_token import Identity

MAX_INPUT_BYTES = 64 * 1024
"""More than any token: a larger input is refused, not read into memory."""


class BadInput(Exception):
    """The token cannot be read; the message says why and never holds the input."""


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    token = commands.add_parser(
        "token",
        help="inspect or review a service account token (debugging refused tokens)",
        description="Inspect a service account token offline, or review it against the cluster.",
    )
    actions = token.add_subparsers(title="actions", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="decode a token without verifying it and say what it claims",
        description="Decode a token WITHOUT verifying it: issuer, audiences, subject, bound Pod and node, issue "
        "and expiry times. Says when it is a legacy Secret token or a Kubernetes API credential. "
        "Exit 0 decoded, 2 unreadable or not a JWT.",
    )
    _add_source(inspect)
    inspect.add_argument(
        "--api-audience",
        action="append",
        default=[],
        metavar="A",
        help="an audience of your API server (--api-audiences), to recognise API credentials; repeatable",
    )
    inspect.set_defaults(run=run_inspect)

    review = actions.add_parser(
        "review",
        help="check a token against the cluster for an audience, as a receiver would",
        description="Check a token for AUDIENCE with the TokenReview API (or --offline, from the cluster's "
        "published keys) and print the identity or why it is refused. "
        "Exit 0 accepted, 1 refused, 2 no verdict (API server unreachable, own credentials refused) or bad input "
        "(unreadable, not a JWT).",
    )
    review.add_argument("--audience", required=True, help="the receiver's audience the token must be for")
    review.add_argument(
        "--allow",
        action="append",
        metavar="P",
        help="NAMESPACE/SERVICEACCOUNT the receiver accepts ('*' per part), repeatable (default: */*, anyone)",
    )
    review.add_argument("--kubeconfig", help="kubeconfig with the reviewer's credentials (default: in-cluster)")
    review.add_argument("--context", help="kubeconfig context to use")
    review.add_argument(
        "--offline",
        action="store_true",
        help="verify from the cluster's published keys (OfflineVerifier, extra 'offline') instead of TokenReview",
    )
    _add_source(review)
    review.set_defaults(run=run_review)


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE|-",
        help="file holding the token, or - for standard input (default: the file $SERVICE_ACCOUNT_TOKEN_PATH names)",
    )


def read_token(source: str | None) -> tuple[str, str]:
    """``(token, where)`` from FILE, ``-`` or the token-projector variable; BadInput saying why not."""
    if source is None:
        from audience_token import AudienceTokenError, TokenFile

        try:
            return TokenFile().read(), "$SERVICE_ACCOUNT_TOKEN_PATH"
        except AudienceTokenError as error:
            raise BadInput(f"no FILE given, and {error}") from None
    if source == "-":
        raw, where = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1), "standard input"
    else:
        where = source
        try:
            with open(source, "rb") as handle:
                raw = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as error:
            raise BadInput(f"cannot read {source}: {error.strerror or type(error).__name__}") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise BadInput(f"{where} is larger than {MAX_INPUT_BYTES} bytes: not a token")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadInput(f"{where} is not ASCII text, so it holds no token") from None
    from audience_token.inspect import strip_bearer

    token = strip_bearer(text)
    if not token:
        raise BadInput(f"{where} is empty")
    return token, where


def library_missing() -> bool:
    """True (and says what to install) when the audience_token library is not importable."""
    try:
        import audience_token  # noqa: F401
    except ImportError:
        print(
            "token-projector: the token commands need the audience_token library: pip install ./audience_token",
            file=sys.stderr,
        )
        return True
    return False


def run_inspect(args: argparse.Namespace) -> int:
    if library_missing():
        return EXIT_USAGE
    from audience_token.inspect import API_SERVER_AUDIENCES, NotAJwt, render, summarize

    try:
        token, where = read_token(args.file)
        now = datetime.now(UTC)
        summary = summarize(token, now=now, api_audiences=API_SERVER_AUDIENCES | set(args.api_audience))
    except (BadInput, NotAJwt) as error:
        print(f"token-projector: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"token from {where}")
    print(render(summary, now=now))
    return EXIT_OK


def run_review(args: argparse.Namespace) -> int:
    if library_missing():
        return EXIT_USAGE
    from audience_token import AudienceTokenError, NotAllowed, ReviewUnavailable, Unauthenticated
    from audience_token.errors import MALFORMED

    allow = args.allow or ["*/*"]
    try:
        token, where = read_token(args.file)
        identity = asyncio.run(_verify(token, args, allow))
    except (BadInput, ReviewUnavailable) as error:
        what = "no verdict" if isinstance(error, ReviewUnavailable) else "bad input"
        print(f"token-projector: {what}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Unauthenticated as error:
        if error.reason == MALFORMED:  # not a token at all: the input is wrong, not the caller
            print(f"token-projector: bad input: {error.message}", file=sys.stderr)
            return EXIT_USAGE
        print(f"refused ({error.reason}): {error.message}")
        return EXIT_DENIED
    except NotAllowed as error:
        print(f"refused (not allowed): {error.message}")
        _print_identity(error.identity)
        return EXIT_DENIED
    except AudienceTokenError as error:  # ConfigError: a bad --allow, --audience or kubeconfig
        print(f"token-projector: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    mode = "offline, from the cluster's keys" if args.offline else "TokenReview"
    print(f"accepted for audience {args.audience!r} ({mode}; token from {where}; allow {', '.join(allow)})")
    _print_identity(identity)
    return EXIT_OK


async def _verify(token: str, args: argparse.Namespace, allow: list[str]) -> "Identity":
    from audience_token import OfflineVerifier, TokenReviewer

    if args.offline:
        async with OfflineVerifier(args.audience, allow=allow, kubeconfig=args.kubeconfig, context=args.context) as v:
            return await v.verify(token)
    async with TokenReviewer(args.audience, allow=allow, kubeconfig=args.kubeconfig, context=args.context) as r:
        return await r.verify(token)


def _print_identity(identity: "Identity") -> None:
    rows = [
        ("service account", f"{identity.namespace}/{identity.service_account}"),
        ("username", identity.username),
        ("uid", identity.uid or "-"),
        ("pod", f"{identity.pod_name} (uid {identity.pod_uid})" if identity.pod_name else "- (not bound to a Pod)"),
    ]
    if identity.node_name:
        rows.append(("node", f"{identity.node_name} (uid {identity.node_uid})"))
    if identity.credential_id:
        rows.append(("credential id", identity.credential_id))
    if identity.groups:
        rows.append(("groups", ", ".join(identity.groups)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name + ':':<{width + 1}} {value}")
