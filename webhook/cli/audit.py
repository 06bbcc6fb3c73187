"""``token-projector audit``: legacy tokens in a live cluster, and what the webhook would refuse there.

For a security team deciding when to switch to ``--legacy-token-scope all``: the legacy token
Secrets with the API server's own tracking of their use, who uses them, the Pods and workloads
the webhook would refuse or warn about (under the settings given and with scope ``all``), and
the opted-in Pods that still lack their token. Exit 0 when nothing would be refused, 1 when
something would be (for a scheduled job), 2 when a list could not be read (the report says which
and what permission it needs) or the cluster cannot be reached.
"""

import argparse
import sys
from typing import Any

from webhook.cli.exits import EXIT_DENIED, EXIT_OK, EXIT_USAGE
from webhook.cli.options import add_arguments, load
from webhook.cli.report import as_json, table
from webhook.core.contract import Contract
from webhook.core.wire import Json
from webhook.install.deployment import NAMESPACE

RBAC_HINT = "see manifests/audit/ for the exact RBAC (list, and create on subjectaccessreviews)"


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmd = commands.add_parser(
        "audit",
        help="report legacy tokens in a live cluster and what the webhook would refuse there",
        description=(
            "Read a live cluster (list calls only; Secrets as metadata only) and report legacy service account "
            "token Secrets, who uses them, and the Pods and workloads the webhook would refuse or warn about. "
            "Exit 0 when nothing would be refused, 1 when something would be, 2 when something could not be read."
        ),
    )
    cmd.add_argument("--namespace", help="audit this namespace only (default: every namespace)")
    cmd.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table (default) or json")
    cmd.add_argument(
        "--webhook-namespace",
        default=NAMESPACE,
        help=f"the webhook's own namespace, which it is never called for (default: {NAMESPACE})",
    )
    cmd.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config, else in-cluster)")
    cmd.add_argument("--context", help="kubeconfig context to use")
    add_arguments(cmd, Contract)
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    contract = load(Contract, args)
    # The Kubernetes client: loaded only when this command runs.
    from webhook.core.audit import analyse
    from webhook.install.audit import read_inventory

    inventory = read_inventory(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        webhook_namespace=args.webhook_namespace,
        contract=contract,
    )
    report = analyse(inventory, contract)
    for unread in report["notRead"]:
        scope = f"in namespace {unread['namespace']}" if unread["namespace"] else "cluster-wide"
        print(f"token-projector: cannot list {unread['resource']} {scope}: {unread['message']}", file=sys.stderr)
    sys.stdout.write(as_json(report) if args.output == "json" else render(report))
    summary = report["summary"]
    if summary["refused"]:
        return EXIT_DENIED
    return EXIT_USAGE if summary["notRead"] else EXIT_OK


def render(report: Json) -> str:
    """The report as sections of tables, each saying what it is and how many rows it has."""
    out = []
    scope = f"namespace {report['namespace']}" if report["namespace"] else "all namespaces"
    settings = report["settings"]
    out.append(
        f"token-projector audit of {scope}, with --legacy-token-policy {settings['legacyTokenPolicy']} "
        f"--legacy-token-scope {settings['legacyTokenScope']}{' --strict' if settings['strict'] else ''}\n"
    )
    since = report["trackingSince"]
    out.append(
        f"The API server has tracked legacy token use since {since}: no LAST USED means not used since then.\n"
        if since
        else "The API server records no legacy token tracking start date (or it could not be read).\n"
    )

    secrets = report["legacyTokenSecrets"]
    out.append(_section(f"LEGACY TOKEN SECRETS ({len(secrets)})", "secrets" in _unread(report)))
    out.append(
        table(
            ("NAMESPACE/NAME", "SERVICEACCOUNT", "CREATED", "LAST USED", "INVALID SINCE", "USED BY"),
            [
                (
                    f"{s['namespace']}/{s['name']}",
                    s["serviceAccount"] or "-",
                    s["created"] or "-",
                    s["lastUsed"] or "-",
                    s["invalidSince"] or "-",
                    ", ".join(s["usedBy"]) or "nothing found",
                )
                for s in secrets
            ],
        )
    )
    accounts = report["serviceAccountsWithSecrets"]
    out.append(
        _section(f"SERVICEACCOUNTS THAT STILL LIST SECRETS ({len(accounts)})", "serviceaccounts" in _unread(report))
    )
    out.append(
        table(
            ("NAMESPACE/NAME", "SECRETS", "OF WHICH LEGACY TOKENS"),
            [
                (f"{a['namespace']}/{a['name']}", ", ".join(a["secrets"]), ", ".join(a["legacyTokenSecrets"]) or "-")
                for a in accounts
            ],
        )
    )
    both = "scopeAll" in (report["pods"] + report["workloads"] + [{"scopeAll": None}])[0]
    for title, rows, resource in (
        ("PODS THE WEBHOOK WOULD REFUSE OR WARN ABOUT", report["pods"], "pods"),
        ("WORKLOADS THE WEBHOOK WOULD REFUSE OR WARN ABOUT (as the Pods they would create)", report["workloads"], ""),
    ):
        out.append(_section(f"{title} ({len(rows)})", bool(resource) and resource in _unread(report)))
        headers = ("KIND", "NAMESPACE/NAME", "NOW", *(("SCOPE ALL",) if both else ()), "MESSAGE")
        out.append(table(headers, [_verdict_cells(row, both=both) for row in rows]))
    opted = report["optedInPods"]
    out.append(_section(f"OPTED-IN PODS ({len(opted)})", "pods" in _unread(report)))
    out.append(
        table(
            ("NAMESPACE/NAME", "AUDIENCE", "PROJECTED TOKEN", "NOW"),
            [
                (
                    f"{p['namespace']}/{p['name']}",
                    p["audience"],
                    "yes" if p["hasToken"] else "missing (created before the webhook?)",
                    _outcome(p, "current"),
                )
                for p in opted
            ],
        )
    )
    accounts = report["annotatedServiceAccounts"]
    out.append(_section(f"SERVICEACCOUNTS THAT SET A TOKEN FOR THEIR PODS ({len(accounts)})", False))
    out.append(
        table(
            ("NAMESPACE/NAME", "ANNOTATIONS", "NAMESPACE OPTED IN"),
            [
                (
                    f"{a['namespace']}/{a['name']}",
                    ", ".join(f"{k}={v}" for k, v in a["annotations"].items()),
                    {True: "yes", False: "no (label it token-projector.io/service-accounts=enabled)", None: "unknown"}[
                        a["namespaceOptedIn"]
                    ],
                )
                for a in accounts
            ],
        )
    )
    lacking = report["podsWithoutTheirServiceAccountsToken"]
    out.append(
        _section(
            f"RUNNING PODS WITHOUT THE TOKEN THEIR SERVICEACCOUNT NOW GIVES ({len(lacking)}); a ServiceAccount "
            "change reaches only new Pods: roll these",
            "pods" in _unread(report),
        )
    )
    out.append(
        table(
            ("NAMESPACE/NAME", "SERVICEACCOUNT", "OWNER", "TO ROLL"),
            [(f"{p['namespace']}/{p['name']}", p["serviceAccount"], p["owner"] or "-", p["roll"]) for p in lacking],
        )
    )
    vault = report["vaultAgentPods"]
    out.append(_section(f"VAULT AGENT PODS TO FIX ({len(vault)})", "pods" in _unread(report)))
    out.append(
        table(
            ("NAMESPACE/NAME", "WARNING"), [(f"{v['namespace']}/{v['name']}", "; ".join(v["warnings"])) for v in vault]
        )
    )
    unreviewed = report["protectedWithoutTokenReview"]
    out.append(
        _section(
            f"PROTECTED WORKLOADS WHOSE SERVICEACCOUNT MAY NOT CREATE TOKENREVIEWS ({len(unreviewed)}); their proxy "
            "answers 503 to every caller: bind the account to the audience-token-reviewer ClusterRole (docs/proxy.md)",
            "subjectaccessreviews.authorization.k8s.io" in _unread(report),
        )
    )
    out.append(
        table(
            ("NAMESPACE/SERVICEACCOUNT", "PROTECTED"),
            [(f"{u['namespace']}/{u['serviceAccount']}", ", ".join(u["protected"])) for u in unreviewed],
        )
    )
    if report["notRead"]:
        out.append(_section(f"NOT READ ({len(report['notRead'])}); {RBAC_HINT}", False))
        out.append(
            table(
                ("RESOURCE", "SCOPE", "WHY"),
                [(u["resource"], u["namespace"] or "cluster-wide", u["message"]) for u in report["notRead"]],
            )
        )
    summary = report["summary"]
    out.append(
        f"\n{summary['refused']} would be refused now, {summary['refusedWithScopeAll']} with --legacy-token-scope all; "
        f"{summary['legacyTokenSecrets']} legacy token Secrets; {summary['optedInWithoutToken']} opted-in Pods "
        f"without their token; {summary['withoutServiceAccountsToken']} Pods without their ServiceAccount's token; "
        f"{summary['vaultAgentPods']} Vault Agent Pods to fix; "
        f"{summary['protectedWithoutTokenReview']} protected workloads' accounts without TokenReview permission; "
        f"{summary['notRead']} lists not read.\n"
    )
    return "".join(out)


def _verdict_cells(row: Json, *, both: bool) -> tuple[str, ...]:
    message = row["current"]["message"] or (row["scopeAll"]["message"] if both else "")
    cells = [row.get("kind", "Pod"), f"{row['namespace']}/{row['name']}", _outcome(row, "current")]
    if both:
        cells.append(_outcome(row, "scopeAll"))
    return (*cells, message)


def _outcome(row: Json, key: str) -> str:
    verdict: Any = row[key]
    shown: str = {"denied": "refused", "mutated": "allowed, patched", "unchanged": "allowed"}.get(
        verdict["outcome"], verdict["outcome"]
    )
    if verdict["warnings"] and verdict["outcome"] != "denied":
        shown += ", warned"
    return shown + (" (exempt namespace)" if row.get("exempt") else "")


def _section(title: str, unread: bool) -> str:
    return f"\n{title}{' - NOT READ, see below' if unread else ''}\n"


def _unread(report: Json) -> set[str]:
    return {u["resource"] for u in report["notRead"]}
