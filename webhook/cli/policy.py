"""``token-projector policy``: print the admission-policy engine (no server) as YAML for ``kubectl apply -f -``.

It takes the very settings ``serve`` takes (the same flags, environment variables and defaults, from
:class:`~webhook.core.contract.Contract`), so ``token-projector policy | kubectl apply -f -`` gives a
cluster the contract its webhook would enforce with those settings (docs/admission-policy.md).
"""

import argparse
import sys
from typing import Any

from webhook.cli.manifests import _yaml
from webhook.cli.options import add_arguments, load
from webhook.core.contract import Contract
from webhook.core.kubernetes import SYSTEM_NAMESPACE
from webhook.core.policy import admission_policies
from webhook.core.wire import Json
from webhook.install.deployment import NAMESPACE, OPT_OUT_LABEL


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "policy",
        help="print the contract as a MutatingAdmissionPolicy and a ValidatingAdmissionPolicy (Kubernetes 1.36+)",
        description="Print, as YAML, the admission policies (and their bindings) that enforce the same contract "
        "as the webhook with the same settings, with no webhook server: token-projector policy | kubectl apply -f -",
    )
    parser.add_argument(
        "--namespace",
        default=NAMESPACE,
        help=f"a namespace the policies leave alone besides kube-system, as the webhook its own (default: {NAMESPACE})",
    )
    add_arguments(parser, Contract)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    objects = admission_policies(
        load(Contract, args), excluded_namespaces=(SYSTEM_NAMESPACE, args.namespace), opt_out_label=OPT_OUT_LABEL
    )
    sys.stdout.write(render(objects))
    return 0


def render(objects: list[Json]) -> str:
    """YAML documents, CEL expressions as literal blocks so that they read as written."""
    yaml = _yaml()

    class Dumper(yaml.SafeDumper):  # type: ignore[name-defined,misc]
        pass

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value or len(value) > 100 else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return "---\n".join(
        yaml.dump(obj, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True) for obj in objects
    )
