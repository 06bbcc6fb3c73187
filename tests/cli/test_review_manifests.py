"""``token-projector review`` on manifests: every kind, every format, every exit code, and the webhook's own verdict."""

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.helpers import FIXTURES, TOKEN_ENV, TOKEN_MOUNT, admission_review, run, token_volume
from tests.tools import REPO
from webhook.cli import main
from webhook.core.contract import Contract

MANIFESTS = FIXTURES / "manifests"
KINDS = str(MANIFESTS / "kinds.yaml")
BROKEN = str(MANIFESTS / "broken.yaml")
LIST = str(MANIFESTS / "list.json")
TREE = str(MANIFESTS / "tree")
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def review_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["review", *args, "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reviewed rows by name (the Service named like the Deployment it fronts is left out)."""
    return {row["name"]: row for row in report["rows"] if row["outcome"] != "not applicable"}


def api_access_volume(name: str = "kube-api-access-xxxxx") -> dict[str, Any]:
    """The volume the ServiceAccount admission plugin adds before any webhook is called."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


API_MOUNT = {"name": "kube-api-access-xxxxx", "readOnly": True, "mountPath": SA_PATH}


def test_every_kind_with_a_pod_template_is_reviewed_and_other_kinds_are_not_applicable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = review_json(capsys, KINDS)
    outcomes = {(row["kind"], row["name"]): row["outcome"] for row in report["rows"]}
    assert outcomes == {
        ("Pod", "web"): "mutated",
        ("Deployment", "api"): "mutated",
        ("StatefulSet", "db"): "mutated",
        ("DaemonSet", "agent"): "mutated",
        ("ReplicaSet", "worker"): "mutated",
        ("Job", "migrate"): "mutated",
        ("CronJob", "report"): "mutated",
        ("ReplicationController", "legacy-app"): "mutated",
        ("Service", "api"): "not applicable",
    }
    assert [row["document"] for row in report["rows"]] == list(range(1, 10))
    templates = {row["kind"]: row.get("podTemplate") for row in report["rows"]}
    assert templates["CronJob"] == "/spec/jobTemplate/spec/template"
    assert templates["Pod"] == "/"
    assert code == 0


def test_a_deployments_verdict_is_the_webhooks_answer_to_the_pod_its_replicaset_would_create(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Written out by hand: what the ReplicaSet controller creates, after the ServiceAccount plugin.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "api-",
            "namespace": "shop",
            "labels": {"app": "api"},
            "annotations": {"token-projector.io/audience": "data-store"},
        },
        "spec": {
            "containers": [{"name": "api", "image": "registry.example.com/api:1", "volumeMounts": [API_MOUNT]}],
            "serviceAccountName": "default",
            "volumes": [api_access_volume()],
        },
    }
    expected = run(admission_review(pod)).response["response"]
    _, report = review_json(capsys, KINDS)
    got = by_name(report)["api"]["response"]
    assert {**got, "uid": ""} == {**expected, "uid": ""}


def test_a_statefulsets_pod_is_named_by_ordinal_and_gets_its_claim_volumes(capsys: pytest.CaptureFixture[str]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "db-",
            "name": "db-0",
            "namespace": "default",
            "labels": {"app": "db"},
            "annotations": {"token-projector.io/audience": "data-store"},
        },
        "spec": {
            "containers": [
                {
                    "name": "db",
                    "image": "registry.example.com/db:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, API_MOUNT],
                }
            ],
            "serviceAccountName": "default",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}, api_access_volume()],
        },
    }
    _, report = review_json(capsys, KINDS)
    got = by_name(report)["db"]["response"]
    assert {**got, "uid": ""} == {**run(admission_review(pod)).response["response"], "uid": ""}


def test_patched_yaml_prints_every_manifest_with_the_patch_in_its_pod_template(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["review", KINDS, "-o", "yaml", "--patched"]) == 0
    out = capsys.readouterr().out
    assert out.count("# Source: ") == 9
    patched = list(yaml.safe_load_all(out))
    original = list(yaml.safe_load_all(Path(KINDS).read_text()))
    assert [d["kind"] for d in patched] == [d["kind"] for d in original]
    cronjob = patched[6]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    deployment = patched[1]["spec"]["template"]["spec"]
    for spec in (cronjob, deployment, patched[0]["spec"]):
        assert spec["volumes"] == [token_volume()], "the ServiceAccount plugin's volume is not the manifest's"
        for c in spec["containers"]:
            assert c["volumeMounts"] == [TOKEN_MOUNT]
            assert c["env"] == [TOKEN_ENV]
    worker = patched[4]["spec"]["template"]["spec"]
    assert worker["containers"][0]["env"] == [TOKEN_ENV, {"name": "MODE", "value": "batch"}], "prepended"
    assert worker["initContainers"][0]["volumeMounts"] == [TOKEN_MOUNT], "native sidecars too"
    assert patched[8] == original[8], "what makes no Pods is printed as it was"
    # Outside the template, nothing changed.
    assert {k: v for k, v in patched[1].items() if k != "spec"} == {k: v for k, v in original[1].items() if k != "spec"}


def test_patched_output_equals_the_patch_applied_by_jsonpatch_where_the_template_has_the_arrays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = yaml.safe_load(Path(KINDS).read_text().split("---")[1])
    spec = manifest["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "cache", "emptyDir": {}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(manifest))
    _, report = review_json(capsys, str(path))
    ops = [{**op, "path": "/spec/template" + op["path"]} for op in report["rows"][0]["patch"]]
    assert main(["review", str(path), "-o", "yaml", "--patched"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == jsonpatch.apply_patch(manifest, ops)


def test_a_broken_document_is_reported_with_its_line_and_never_hides_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["review", BROKEN]) == 2
    out, err = capsys.readouterr()
    assert f"{BROKEN}: document 2 (line 17): is not valid YAML: while parsing a flow mapping at line 16" in err
    assert "default/before" in out
    assert "default/after" in out
    code, report = review_json(capsys, BROKEN)
    assert [(r["document"], r["outcome"]) for r in report["rows"]] == [(1, "mutated"), (2, "unreadable"), (3, "denied")]
    assert report["rows"][1]["line"] == 17
    assert code == 2, "unreadable input outranks a denial"


def test_a_denial_exits_1_with_the_webhooks_message_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    text = Path(BROKEN).read_text().split("---")[2]
    assert main(["review", "-"]) == 2  # nothing on standard input
    capsys.readouterr()
    process = subprocess.run(
        [sys.executable, "-m", "webhook", "review", "-"], input=text, capture_output=True, text=True, check=False
    )
    assert process.returncode == 1, process.stderr
    assert "<stdin>  1    Deployment  default/after" in process.stdout
    assert "Pod uses a legacy service account token: volume 'app-token-x7k2p'" in process.stdout


def test_a_list_is_reviewed_item_by_item_and_scope_all_reaches_unannotated_workloads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = review_json(capsys, LIST)
    assert [(r["document"], r["item"], r["kind"], r["outcome"]) for r in report["rows"]] == [
        (1, 1, "ConfigMap", "not applicable"),
        (1, 2, "Deployment", "unchanged"),
    ]
    assert code == 0
    code, report = review_json(capsys, LIST, "--legacy-token-scope", "all")
    assert report["rows"][1]["outcome"] == "denied"
    assert "Secret 'default-token-ab12c', named like a service account token Secret" in report["rows"][1]["message"]
    assert code == 1


def test_a_directory_is_searched_recursively_for_yaml_yml_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = review_json(capsys, TREE)
    assert [(Path(r["file"]).relative_to(TREE).as_posix(), r["name"]) for r in report["rows"]] == [
        ("kustomization.yaml", "-"),
        ("apps/web.yml", "tree-web"),
        ("apps/batch/job.json", "tree-job"),
    ]
    assert code == 0


def test_json_rows_carry_the_full_admission_response_and_its_decoded_patch(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = review_json(capsys, KINDS)
    row = by_name(report)["web"]
    response = row["response"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == row["patch"]
    assert response["auditAnnotations"]["injected"].startswith("volume=audience-token audience=data-store")
    assert report["summary"] == {
        "mutated": 8,
        "unchanged": 0,
        "denied": 0,
        "not applicable": 1,
        "invalid": 0,
        "unreadable": 0,
    }


def test_the_namespace_flag_fills_in_objects_that_name_none(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = review_json(capsys, KINDS, "--namespace", "team-a")
    assert {r["name"]: r["namespace"] for r in report["rows"] if r["kind"] in ("Pod", "Job")} == {
        "web": "shop",
        "migrate": "team-a",
    }


def test_strict_mode_sees_the_api_token_the_serviceaccount_plugin_would_mount(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = review_json(capsys, KINDS, "--strict")
    assert code == 1
    message = by_name(report)["api"]["message"]
    assert "Pod still automounts the Kubernetes API token (volume 'kube-api-access-xxxxx')" in message
    opted_out = (
        Path(KINDS)
        .read_text()
        .split("---")[1]
        .replace("    spec:\n", "    spec:\n      automountServiceAccountToken: false\n", 1)
    )
    path = tmp_path / "no-automount.yaml"
    path.write_text(opted_out)
    code, report = review_json(capsys, str(path), "--strict")
    assert (code, report["rows"][0]["outcome"]) == (0, "mutated")


def test_an_admission_review_among_manifests_is_a_row_and_alone_it_is_answered_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    review_file = FIXTURES / "deployment-pod-annotated.json"
    both = tmp_path / "both.yaml"
    both.write_text(review_file.read_text() + "\n---\n" + Path(KINDS).read_text().split("---")[0])
    code, report = review_json(capsys, str(both))
    assert [(r["kind"], r["outcome"]) for r in report["rows"]] == [("AdmissionReview", "mutated"), ("Pod", "mutated")]
    assert code == 0
    assert main(["review", str(review_file)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "AdmissionReview"


def test_pod_and_patch_options_are_for_an_admission_review_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", KINDS, "--pod"]) == 2
    assert "--pod and --patch answer one AdmissionReview JSON file; for manifests, use -o yaml --patched" in (
        capsys.readouterr().err
    )


def test_patched_without_yaml_output_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", KINDS, "--patched"]) == 2
    assert "--patched goes with -o yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "kind: Pod\nkind: Pod\n",
            "is not valid YAML: while reading a mapping at line 1, column 1; key 'kind' is given twice",
        ),
        (
            "a: &a [x, x]\nb: &b [*a, *a]\n"
            + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("bcdefghij", "cdefghijk", strict=True))
            + "kind: Pod\n",
            "aliases",
        ),
        ("kind: Pod\nspec: !!binary aGVsbG8=\n", "holds a bytes value"),
        ("- kind: Pod\n", "is a list, not a Kubernetes object"),
        ("metadata: {name: x}\n", "has no kind"),
        ("kind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n", "spec.containers must be a list, got a number"),
    ],
)
def test_unusable_documents_exit_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["review", str(path)]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "Traceback" not in err


def test_a_template_that_is_not_an_object_is_named_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cron.yaml"
    path.write_text(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {template: 3}}}\n"
    )
    assert main(["review", str(path)]) == 2
    assert "spec.jobTemplate.spec.template must be an object, got a number" in capsys.readouterr().err


def test_dates_stay_strings_and_a_broken_json_file_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dated = tmp_path / "dated.yaml"
    dated.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {when: 2024-01-01}\n")
    assert main(["review", str(dated), "-o", "yaml", "--patched"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["when"] == "2024-01-01"
    broken = tmp_path / "pod.json"
    broken.write_text('{\n  "kind": "Pod",\n  oops\n}')
    assert main(["review", str(broken)]) == 2
    assert f"{broken}: document 1 (line 3): is not JSON (line 3, column 3)" in capsys.readouterr().err


def test_nothing_to_review_is_an_error_not_a_silent_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n---\n")
    assert main(["review", str(tmp_path)]) == 2
    assert "no Kubernetes objects found in" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "missing")]) == 2
    assert f"cannot read {tmp_path / 'missing'}: No such file or directory" in capsys.readouterr().err


def test_without_pyyaml_yaml_input_says_which_extra_to_install() -> None:
    probe = (
        "import sys\nsys.modules['yaml'] = None  # as if PyYAML were not installed\n"
        "from webhook.cli import main\nsys.exit(main(['review', sys.argv[1]]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, KINDS], capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("reading YAML needs PyYAML: pip install 'token-projector[review]'")
    assert "Traceback" not in result.stderr


def test_reviewing_manifests_loads_neither_the_tls_library_nor_the_cluster_client() -> None:
    probe = (
        "import sys\n"
        "from webhook.cli import main\n"
        "code = main(['review', sys.argv[1], sys.argv[2], '-o', 'yaml', '--patched'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'kubernetes', 'aiohttp',"
        " 'prometheus_client', 'jsonpatch'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, KINDS, TREE], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr


def test_the_review_of_a_workload_is_the_reviews_answer_for_any_contract(capsys: pytest.CaptureFixture[str]) -> None:
    contract = Contract(volume_name="svc-token", env_var="SVC_TOKEN")
    _, report = review_json(capsys, KINDS, "--volume-name", "svc-token", "--env-var", "SVC_TOKEN")
    pod_row = by_name(report)["web"]
    pod = yaml.safe_load(Path(KINDS).read_text().split("---")[0])
    pod["spec"]["serviceAccountName"] = "default"
    pod["spec"]["volumes"] = [api_access_volume()]
    pod["spec"]["containers"][0]["volumeMounts"] = [API_MOUNT]
    expected = run(admission_review(pod), contract).response["response"]
    assert {**pod_row["response"], "uid": ""} == {**expected, "uid": ""}
