"""token-projector's server as shipped, with the review replaced by a fake: for the load benchmark's breakdown.

The fake decodes the body as the real review does, then returns the real answer computed once per
body length (the benchmark's two bodies differ in length; hashing 12-60 KiB per request would be a
cost the real server does not have), so the server sends the same bytes. Its throughput is what
token-projector would reach if the review cost nothing: the gap from the ceiling to it is the server
shell (checks, metrics, the log line, the larger answer), and the gap from it to token-projector is
the review. The fake goes in through the server's own seam (``serve(..., review=...)``).
Usage: python bench/shell_only.py SERVE-ARGUMENTS...
"""

import argparse
import sys

import orjson

from webhook.cli.command import parser
from webhook.cli.options import load
from webhook.core.contract import Contract
from webhook.core.review import Reviewed, review_body
from webhook.server.app import serve
from webhook.server.settings import ServerSettings

_answers: dict[int, Reviewed] = {}


def fake_review_body(raw: bytes, contract: Contract) -> Reviewed:
    orjson.loads(raw)
    answer = _answers.get(len(raw))
    if answer is None:
        answer = _answers[len(raw)] = review_body(raw, contract)
    return answer


def run_with_fake(args: argparse.Namespace) -> int:
    serve(load(ServerSettings, args), load(Contract, args), review=fake_review_body)
    return 0


if __name__ == "__main__":
    args = parser().parse_args(["serve", *sys.argv[1:]])
    sys.exit(run_with_fake(args))
