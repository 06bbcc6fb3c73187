"""``token-projector register``: create or update the MutatingWebhookConfiguration, and say what it did."""

import argparse
from pathlib import Path

from webhook.cli.options import add_arguments, load
from webhook.core.contract import Contract
from webhook.install.deployment import CA_FILE, CONFIGURATION_NAME, NAMESPACE, SERVICE_NAME


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser("register", help="create or update the MutatingWebhookConfiguration")
    parser.add_argument(
        "--ca-file", default=f"certs/{CA_FILE}", help="CA that signed the serving certificate (default: certs/ca.crt)"
    )
    parser.add_argument(
        "--url", help="call the webhook at this https URL (a webhook outside the cluster) instead of the Service"
    )
    parser.add_argument("--service", default=SERVICE_NAME, help=f"the webhook's Service (default: {SERVICE_NAME})")
    parser.add_argument("--namespace", default=NAMESPACE, help=f"the Service's namespace (default: {NAMESPACE})")
    parser.add_argument(
        "--name", default=CONFIGURATION_NAME, help=f"the configuration's name (default: {CONFIGURATION_NAME})"
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config, else in-cluster)"
    )
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument(
        "--service-account-opt-in",
        action="store_true",
        help="also send every Pod of namespaces labelled token-projector.io/service-accounts=enabled "
        "(serve must run with --service-account-opt-in; docs/serviceaccount-opt-in.md)",
    )
    add_arguments(parser, Contract)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # cryptography and the Kubernetes client: loaded only when this command runs.
    from webhook.install.registration import apply_configuration, check_url, read_ca_bundle, webhook_configuration

    desired = webhook_configuration(
        ca_bundle=read_ca_bundle(Path(args.ca_file)),
        contract=load(Contract, args),
        url=check_url(args.url) if args.url else None,
        service=args.service,
        namespace=args.namespace,
        name=args.name,
        service_account_opt_in=args.service_account_opt_in,
    )
    action = apply_configuration(desired, kubeconfig=args.kubeconfig, context=args.context)
    target = args.url or f"service {args.namespace}/{args.service}"
    if action == "unchanged":
        print(f"MutatingWebhookConfiguration {args.name} is already up to date (calls {target}); nothing changed")
    else:
        print(f"MutatingWebhookConfiguration {args.name} {action} (calls {target})")
    return 0
