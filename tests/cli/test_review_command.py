"""``token-projector review`` answers a file offline exactly as the webhook would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, TOKEN_ENV, TOKEN_MOUNT, body_with_nested_value_at, token_volume
from webhook.cli import main

ANNOTATED = str(FIXTURES / "deployment-pod-annotated.json")
LEGACY = str(FIXTURES / "legacy-token-pod-annotated.json")


def test_pod_option_prints_the_pod_with_the_volume_mount_and_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", ANNOTATED, "--pod"]) == 0
    pod = json.loads(capsys.readouterr().out)
    assert token_volume() in pod["spec"]["volumes"]
    for c in pod["spec"]["containers"]:
        assert TOKEN_MOUNT in c["volumeMounts"]
        assert TOKEN_ENV in c["env"]


def test_without_options_it_prints_the_admission_review_response(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", ANNOTATED]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["patchType"] == "JSONPatch"


def test_patch_option_prints_the_decoded_add_operations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", ANNOTATED, "--patch"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert {op["op"] for op in ops} == {"add"}
    assert len(ops) == 5


def test_a_denial_exits_1_and_prints_the_message_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", LEGACY, "--pod"]) == 1
    out = capsys.readouterr()
    assert out.err.startswith("denied: Pod uses a legacy service account token")
    assert json.loads(out.out)["metadata"]["name"] == "legacy", "the unpatched Pod is printed"


def test_settings_flags_change_what_is_injected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", ANNOTATED, "--pod", "--env-var", "AUD_TOKEN", "--legacy-token-policy", "warn"]) == 0
    pod = json.loads(capsys.readouterr().out)
    assert pod["spec"]["containers"][0]["env"][0]["name"] == "AUD_TOKEN"


def test_settings_come_from_the_environment_and_a_flag_beats_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_PROJECTOR_VOLUME_NAME", "from-env")
    assert main(["review", ANNOTATED, "--patch"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["value"]["name"] == "from-env"
    assert main(["review", ANNOTATED, "--patch", "--volume-name", "from-flag"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["value"]["name"] == "from-flag"


def test_an_invalid_setting_exits_2_naming_the_flag_and_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", ANNOTATED, "--max-expiration-seconds", "100"]) == 2
    err = capsys.readouterr().err
    assert "--max-expiration-seconds / TOKEN_PROJECTOR_MAX_EXPIRATION_SECONDS" in err
    assert "100 is not valid" in err


def test_input_that_is_not_json_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["review", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_json_that_is_not_an_admission_review_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "pod.json"
    bad.write_text('{"kind": "Pod"}')
    assert main(["review", str(bad)]) == 2
    assert f"{bad}: document 1 (line 1): spec must be an object, got null" in capsys.readouterr().err


def test_a_missing_file_exits_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "/nonexistent/review.json"]) == 2
    assert "cannot read /nonexistent/review.json" in capsys.readouterr().err


def test_python_dash_m_webhook_reads_standard_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "review", "-", "--patch"],
        input=Path(ANNOTATED).read_bytes(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["path"] == "/spec/volumes/-"


def test_a_deeply_nested_value_where_a_string_belongs_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    review_file = tmp_path / "nested.json"
    review_file.write_bytes(body_with_nested_value_at(("request", "operation"), 1000))
    assert main(["review", str(review_file)]) == 2
    err = capsys.readouterr().err
    assert "request.operation must be a string, got an object" in err
    assert "Traceback" not in err
