"""``token-projector review``: what the webhook would answer, offline, for manifests or an AdmissionReview.

Given one AdmissionReview JSON file it answers it exactly as the server would (and ``--pod`` /
``--patch`` show the result). Given manifests (files, folders, ``-``) it reviews every Pod and
every workload's Pod template as the Pod its controller would create, through the same core as
the server (``webhook.core.workloads``), and prints one row per object: for a CI job, exit 0 when
nothing would be denied, 1 when something would be, 2 when some input cannot be read.
"""

import argparse
import base64
import copy
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.cli.exits import EXIT_DENIED, EXIT_OK, EXIT_USAGE
from webhook.cli.manifests import Document, Entry, entries, read_all
from webhook.cli.options import add_arguments, load
from webhook.cli.report import OUTPUTS, as_json, as_yaml, as_yaml_stream, table
from webhook.core.contract import Contract
from webhook.core.pod import service_account_of
from webhook.core.review import AUDIT_INJECTED, AUDIT_PROXY, Reviewed, review, review_body
from webhook.core.service_accounts import AccountAnnotations
from webhook.core.vault import vault_warnings
from webhook.core.wire import Json
from webhook.core.workloads import apply_adds, decoded_patch, patched, review_object, template_path
from webhook.errors import ConfigError, InvalidReview

DEFAULT_NAMESPACE = "default"
NOT_APPLICABLE = "not applicable"
INVALID = "invalid"
UNREADABLE = "unreadable"


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmd = commands.add_parser(
        "review",
        help="review manifests or an AdmissionReview offline, as the webhook would",
        description=(
            "Review Kubernetes manifests (Pods and workloads, as the Pods their controllers would create) "
            "or answer one AdmissionReview file, offline, exactly as the webhook would. "
            "Exit 0 when nothing would be denied, 1 when something would be, 2 when input cannot be read."
        ),
    )
    cmd.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="YAML or JSON manifests, folders (searched for *.yaml, *.yml, *.json), an AdmissionReview "
        "JSON file, or - for standard input",
    )
    shown = cmd.add_mutually_exclusive_group()
    shown.add_argument(
        "--pod", action="store_true", help="AdmissionReview: print the Pod as it would be after the patch"
    )
    shown.add_argument("--patch", action="store_true", help="AdmissionReview: print the decoded JSON patch")
    shown.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        help="manifests: table (default), json (rows with the full AdmissionResponse), yaml (with --patched: "
        "the manifests as they would be after the webhook)",
    )
    cmd.add_argument("--patched", action="store_true", help="with -o yaml: print the manifests with the patch applied")
    cmd.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="namespace of objects that name none (default: default)"
    )
    add_arguments(cmd, Contract)
    cmd.set_defaults(run=run)


@dataclass
class Row:
    """One object's result, as every output shows it."""

    entry: Entry
    kind: str
    namespace: str
    name: str
    outcome: str
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    response: Any = None
    ops: list[Json] = field(default_factory=list)
    template_path: tuple[str, ...] | None = None
    patched: Json | None = None

    def as_dict(self) -> Json:
        document = self.entry.document
        out: Json = {
            "file": document.source,
            "document": document.index,
            "item": self.entry.item,
            "line": document.item_lines[self.entry.item - 1]
            if self.entry.item and self.entry.item <= len(document.item_lines)
            else document.line,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "outcome": self.outcome,
            "message": self.message,
            "warnings": self.warnings,
        }
        if self.template_path is not None:
            out["podTemplate"] = "".join("/" + part for part in self.template_path) or "/"
        if self.response is not None:
            out["response"] = self.response
            out["patch"] = self.ops
        return out


def run(args: argparse.Namespace) -> int:
    contract = load(Contract, args)
    if args.patched and args.output != "yaml":
        raise ConfigError("--patched goes with -o yaml: token-projector review FILE... -o yaml --patched")
    documents = read_all(args.files, stdin=sys.stdin.buffer)
    single = documents[0] if len(args.files) == 1 and len(documents) == 1 else None
    if args.output is None and single is not None and single.raw is not None and _is_review(single.value):
        return answer_review(single.raw, single.value, args, contract)
    if args.pod or args.patch:
        problems = [d for d in documents if d.error]
        for document in problems:
            _complain(document.where(), document.error or "")
        if not problems:
            print(
                "token-projector: --pod and --patch answer one AdmissionReview JSON file; "
                "for manifests, use -o yaml --patched",
                file=sys.stderr,
            )
        return EXIT_USAGE

    rows = []
    accounts = service_accounts_in(documents, namespace=args.namespace)
    for document in documents:
        if document.error is not None:
            _complain(document.where(), document.error)
            rows.append(_unreadable(Entry(document=document, item=None, obj=None, error=document.error)))
            continue
        for entry in entries(document):
            row = review_entry(entry, contract, namespace=args.namespace, accounts=accounts)
            if row.outcome in (INVALID, UNREADABLE):
                _complain(document.where(entry.item), row.message)
            rows.append(row)
    unreadable = any(d.error is not None for d in documents)
    if not rows:
        print(f"token-projector: no Kubernetes objects found in {', '.join(args.files)}", file=sys.stderr)
        return EXIT_USAGE

    _print(rows, documents, output=args.output or "table", patched_only=args.patched)
    if unreadable or any(row.outcome in (INVALID, UNREADABLE) for row in rows):
        return EXIT_USAGE
    return EXIT_DENIED if any(row.outcome == "denied" for row in rows) else EXIT_OK


def service_accounts_in(documents: list[Document], *, namespace: str) -> dict[tuple[str, str], AccountAnnotations]:
    """The ServiceAccounts of the input by (namespace, name): applied to the workloads that run as them."""
    found = {}
    for document in documents:
        if document.error is not None:
            continue
        for entry in entries(document):
            obj = entry.obj
            if obj is None or obj.get("kind") != "ServiceAccount" or obj.get("apiVersion") != "v1":
                continue
            metadata = obj.get("metadata")
            if not isinstance(metadata, dict):
                continue
            name, where = metadata.get("name"), metadata.get("namespace") or namespace
            annotations = metadata.get("annotations")
            if not isinstance(annotations, dict):
                annotations = {}
            if isinstance(name, str) and isinstance(where, str):
                strings = {k: v for k, v in annotations.items() if isinstance(v, str)}
                found[(where, name)] = AccountAnnotations(where, name, strings)
    return found


def review_entry(
    entry: Entry,
    contract: Contract,
    *,
    namespace: str,
    accounts: dict[tuple[str, str], AccountAnnotations] | None = None,
) -> Row:
    """One object's row: reviewed through the core, or why it was not.

    ``accounts``: the input's ServiceAccounts; a workload that runs as one of them is reviewed as the
    webhook reviews it in a namespace with ServiceAccount opt-in (docs/serviceaccount-opt-in.md).
    """
    obj = entry.obj
    if obj is None:
        return _unreadable(entry)
    kind = str(obj["kind"])
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    name = str(
        metadata.get("name") or (f"{metadata.get('generateName')}<generated>" if metadata.get("generateName") else "-")
    )
    object_namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else None
    row_namespace = object_namespace or namespace
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"token-projector-review:{entry.document.where(entry.item)}"))

    if kind == "AdmissionReview":
        try:
            reviewed = review(obj, contract)
        except InvalidReview as error:
            return Row(entry=entry, kind=kind, namespace="-", name="-", outcome=INVALID, message=str(error))
        row = _row(entry, kind, reviewed, namespace=reviewed.namespace or "-", name=reviewed.pod or "-")
        request_object = obj["request"].get("object")
        if row.ops and isinstance(request_object, dict):
            row.patched = apply_adds(request_object, row.ops)
        elif isinstance(request_object, dict):
            row.patched = copy.deepcopy(request_object)
        return row

    if template_path(obj) is None:
        return Row(
            entry=entry,
            kind=kind,
            namespace=row_namespace if object_namespace else "-",
            name=name,
            outcome=NOT_APPLICABLE,
            message=f"{obj.get('apiVersion') or '?'} {kind} makes no Pods",
        )
    account = _account_of(obj, accounts or {}, namespace=row_namespace)
    try:
        verdict = review_object(obj, contract, namespace=row_namespace, uid=uid, service_account=account)
    except InvalidReview as error:
        return Row(entry=entry, kind=kind, namespace=row_namespace, name=name, outcome=INVALID, message=str(error))
    row = _row(entry, kind, verdict.reviewed, namespace=row_namespace, name=name)
    row.template_path = verdict.template_path
    row.patched = patched(obj, verdict)
    pod = apply_adds(verdict.pod, verdict.ops)
    has_volume = any(v.get("name") == contract.volume_name for v in pod["spec"].get("volumes") or ())
    metadata = pod.get("metadata") or {}
    vault = vault_warnings(metadata.get("annotations") or {}, has_token_volume=has_volume, contract=contract)
    if vault:
        row.warnings += vault
        if row.outcome != "denied":
            row.message = "; ".join(row.warnings)
    return row


def _account_of(
    obj: Json, accounts: dict[tuple[str, str], AccountAnnotations], *, namespace: str
) -> AccountAnnotations | None:
    """The input's ServiceAccount the Pods of ``obj`` run as, if the input has it."""
    if not accounts:
        return None
    path = template_path(obj) or ()
    template: object = obj
    for part in path:
        template = template.get(part) if isinstance(template, dict) else None
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return None
    name = service_account_of({"spec": spec})
    return accounts.get((namespace, name)) if isinstance(name, str) else None


def _unreadable(entry: Entry) -> Row:
    return Row(entry=entry, kind="-", namespace="-", name="-", outcome=UNREADABLE, message=entry.error or "")


_SHOWN = (AUDIT_INJECTED, AUDIT_PROXY)
"""What an allowed row's message says the webhook added: the token, and the verifying proxy."""


def _row(entry: Entry, kind: str, reviewed: Reviewed, *, namespace: str, name: str) -> Row:
    response = reviewed.response["response"]
    warnings = list(response.get("warnings", ()))
    if reviewed.outcome == "denied":
        message = response["status"]["message"]
    elif warnings:
        message = "; ".join(warnings)
    else:
        audit = response.get("auditAnnotations", {})
        message = "; ".join(
            f"{key}: {audit[key]}" if key == AUDIT_PROXY else audit[key] for key in _SHOWN if key in audit
        )
    return Row(
        entry=entry,
        kind=kind,
        namespace=namespace,
        name=name,
        outcome=reviewed.outcome,
        message=message,
        warnings=warnings,
        response=response,
        ops=decoded_patch(reviewed),
    )


def _print(rows: list[Row], documents: list[Document], *, output: str, patched_only: bool) -> None:
    if output == "table":
        cells = [
            (
                row.entry.document.source,
                (str(row.entry.document.index) if row.entry.document.index else "-")
                + (f".{row.entry.item}" if row.entry.item else ""),
                row.kind,
                f"{row.namespace}/{row.name}",
                row.outcome,
                row.message,
            )
            for row in rows
        ]
        sys.stdout.write(table(("FILE", "DOC", "KIND", "NAMESPACE/NAME", "OUTCOME", "MESSAGE"), cells))
        return
    if output == "yaml" and patched_only:
        sys.stdout.write(as_yaml_stream(_patched_documents(rows, documents)))
        return
    summary = {outcome: sum(row.outcome == outcome for row in rows) for outcome in _OUTCOMES}
    report = {"rows": [row.as_dict() for row in rows], "summary": summary}
    sys.stdout.write(as_json(report) if output == "json" else as_yaml(report))


_OUTCOMES = ("mutated", "unchanged", "denied", NOT_APPLICABLE, INVALID, UNREADABLE)


def _patched_documents(rows: list[Row], documents: list[Document]) -> list[tuple[str, Any]]:
    """Every readable document in order, with each reviewed object replaced by its patched self."""
    by_entry: dict[tuple[int, int | None], Row] = {(id(row.entry.document), row.entry.item): row for row in rows}
    out: list[tuple[str, Any]] = []
    for document in documents:
        if document.error is not None or document.value is None:
            continue
        value = document.value
        whole = by_entry.get((id(document), None))
        if whole is not None:
            out.append((document.source, whole.patched if whole.patched is not None else value))
            continue
        if isinstance(value, dict) and isinstance(value.get("items"), list):
            items = []
            for number, item in enumerate(value["items"], start=1):
                row = by_entry.get((id(document), number))
                items.append(row.patched if row is not None and row.patched is not None else item)
            value = {**value, "items": items}
        out.append((document.source, value))
    return out


def _complain(where: str, message: str) -> None:
    print(f"token-projector: {where}: {message}" if where else f"token-projector: {message}", file=sys.stderr)


def _is_review(value: object) -> bool:
    return isinstance(value, dict) and value.get("kind") == "AdmissionReview"


def answer_review(raw: bytes, body: Any, args: argparse.Namespace, contract: Contract) -> int:
    """One AdmissionReview file, answered as the server answers it (from its bytes), as before manifests."""
    reviewed = review_body(raw, contract)
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
