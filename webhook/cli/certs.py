"""``token-projector certs``: write a development CA and serving certificate, and say where they went."""

import argparse
from pathlib import Path

from webhook.install.deployment import (
    CA_FILE,
    CA_VALIDITY_DAYS,
    CERT_FILE,
    NAMESPACE,
    SERVICE_NAME,
    SERVING_VALIDITY_DAYS,
)


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser("certs", help="write a CA and a serving certificate for the webhook")
    parser.add_argument(
        "--out-dir", default="certs", help="folder to write ca.crt, ca.key, tls.crt, tls.key (default: certs)"
    )
    parser.add_argument("--service", default=SERVICE_NAME, help=f"Service name (default: {SERVICE_NAME})")
    parser.add_argument("--namespace", default=NAMESPACE, help=f"Service namespace (default: {NAMESPACE})")
    parser.add_argument("--dns-name", action="append", default=[], help="extra DNS SAN, e.g. localhost (repeatable)")
    parser.add_argument("--ip", action="append", default=[], help="extra IP SAN, e.g. 127.0.0.1 (repeatable)")
    parser.add_argument(
        "--validity-days",
        type=int,
        default=SERVING_VALIDITY_DAYS,
        help=f"serving certificate lifetime (default: {SERVING_VALIDITY_DAYS}; the CA gets {CA_VALIDITY_DAYS})",
    )
    parser.add_argument("--if-missing", action="store_true", help="do nothing when tls.crt and tls.key exist already")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.install.certs import CertRequest, ca_bundle, write_certs  # cryptography: only when run

    request = CertRequest(
        out_dir=Path(args.out_dir),
        service=args.service,
        namespace=args.namespace,
        dns_names=tuple(args.dns_name),
        ips=tuple(args.ip),
        validity_days=args.validity_days,
    )
    if args.if_missing and request.serving_pair_exists():
        print(f"{request.out_dir}/{CERT_FILE} exists; kept it")
        return 0
    write_certs(request)
    print(f"wrote {', '.join(str(path) for path in request.files())}")
    print(f"SANs: {', '.join(request.all_dns_names() + list(request.ips))}")
    print("caBundle (base64 of ca.crt):")
    print(ca_bundle(request.out_dir / CA_FILE))
    return 0
