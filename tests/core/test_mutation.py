"""What an annotated Pod gets: the volume, the mounts, the env var, and only as add operations."""

import base64
import copy
import re

import pytest

from tests.helpers import (
    TOKEN_ENV,
    TOKEN_MOUNT,
    TOKEN_PATH,
    admission_review,
    annotated,
    container,
    denial,
    fixture,
    make_pod,
    ops_of,
    patched,
    run,
    token_volume,
)
from webhook.core.contract import Contract


def test_annotated_deployment_pod_gets_the_volume_and_every_container_the_mount_and_env_var() -> None:
    body = fixture("deployment-pod-annotated.json")
    pod = patched(body)
    assert pod["spec"]["volumes"][0]["name"].startswith("kube-api-access-")
    assert pod["spec"]["volumes"][1] == token_volume()
    for c in pod["spec"]["containers"]:
        assert TOKEN_MOUNT in c["volumeMounts"]
        assert c["env"][0] == TOKEN_ENV
    # Everything else about the Pod is untouched.
    original = body["request"]["object"]
    assert pod["spec"]["containers"][0]["env"][1:] == original["spec"]["containers"][0]["env"]
    assert {k: v for k, v in pod["spec"].items() if k not in ("volumes", "containers")} == {
        k: v for k, v in original["spec"].items() if k not in ("volumes", "containers")
    }
    assert pod["metadata"] == original["metadata"]


def test_pod_without_volumes_gets_the_volumes_array_created() -> None:
    body = admission_review(make_pod(annotations=annotated()))
    assert ops_of(run(body))[0] == {"op": "add", "path": "/spec/volumes", "value": [token_volume()]}
    assert patched(body)["spec"]["volumes"] == [token_volume()]


def test_container_without_mounts_or_env_gets_both_arrays_created() -> None:
    body = admission_review(make_pod(annotations=annotated()))
    paths = {op["path"] for op in ops_of(run(body))}
    assert {"/spec/containers/0/volumeMounts", "/spec/containers/0/env"} <= paths
    c = patched(body)["spec"]["containers"][0]
    assert c["volumeMounts"] == [TOKEN_MOUNT]
    assert c["env"] == [TOKEN_ENV]


def test_existing_arrays_are_appended_to_and_never_replaced() -> None:
    app = container("app", env=[{"name": "A", "value": "1"}], volumeMounts=[{"name": "data", "mountPath": "/data"}])
    body = admission_review(make_pod(app, annotations=annotated(), volumes=[{"name": "data", "emptyDir": {}}]))
    paths = [op["path"] for op in ops_of(run(body))]
    assert paths == ["/spec/volumes/-", "/spec/containers/0/volumeMounts/-", "/spec/containers/0/env/0"]
    c = patched(body)["spec"]["containers"][0]
    assert c["env"] == [TOKEN_ENV, {"name": "A", "value": "1"}]
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/data"}, TOKEN_MOUNT]


def test_env_var_comes_first_so_the_containers_own_variables_can_refer_to_it() -> None:
    app = container("app", env=[{"name": "TOKEN_FILE", "value": "$(SERVICE_ACCOUNT_TOKEN_PATH)"}])
    env = patched(admission_review(make_pod(app, annotations=annotated())))["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["SERVICE_ACCOUNT_TOKEN_PATH", "TOKEN_FILE"]


def test_pod_without_init_containers_gets_no_init_containers_key() -> None:
    pod = patched(admission_review(make_pod(annotations=annotated())))
    assert "initContainers" not in pod["spec"]


def test_init_containers_and_native_sidecars_get_the_token_and_keep_their_own_fields() -> None:
    sidecar = container("proxy", restartPolicy="Always", startupProbe={"futureProbe": {"x": 1}})
    init = container("migrate")
    body = admission_review(make_pod(annotations=annotated(), init_containers=[init, sidecar]))
    pod = patched(body)
    for c in pod["spec"]["initContainers"]:
        assert c["volumeMounts"] == [TOKEN_MOUNT]
        assert c["env"] == [TOKEN_ENV]
    assert pod["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    assert pod["spec"]["initContainers"][1]["startupProbe"] == {"futureProbe": {"x": 1}}


def test_patch_never_writes_a_whole_container_list_or_container() -> None:
    body = fixture("deployment-pod-annotated.json")
    container_ops = [op["path"] for op in ops_of(run(body)) if op["path"].startswith("/spec/containers")]
    assert container_ops
    for path in container_ops:
        assert re.fullmatch(r"/spec/containers/\d+/(volumeMounts(/-)?|env(/0)?)", path), path


def test_fields_unknown_to_token_projector_survive_the_patch() -> None:
    app = container("app", resizePolicy=[{"resourceName": "cpu"}], someFutureField={"nested": [1, 2]})
    body = admission_review(make_pod(app, annotations=annotated(), hostUsers=False, futureSpecField="kept"))
    pod = patched(body)
    assert pod["spec"]["futureSpecField"] == "kept"
    assert pod["spec"]["containers"][0]["someFutureField"] == {"nested": [1, 2]}
    assert pod["spec"]["containers"][0]["resizePolicy"] == [{"resourceName": "cpu"}]


def test_skipped_containers_get_nothing() -> None:
    body = admission_review(
        make_pod(container("app"), container("istio-proxy"), annotations=annotated(skip_containers="istio-proxy"))
    )
    pod = patched(body)
    assert "volumeMounts" not in pod["spec"]["containers"][1]
    assert "env" not in pod["spec"]["containers"][1]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [TOKEN_MOUNT]


def test_skip_list_tolerates_spaces_and_empty_entries() -> None:
    names = [container(n) for n in ("app", "a", "b")]
    pod = patched(admission_review(make_pod(*names, annotations=annotated(skip_containers=" a ,, b ,"))))
    assert [("env" in c) for c in pod["spec"]["containers"]] == [True, False, False]


def test_skip_list_applies_to_init_containers_too() -> None:
    body = admission_review(
        make_pod(annotations=annotated(skip_containers="setup"), init_containers=[container("setup")])
    )
    assert "env" not in patched(body)["spec"]["initContainers"][0]


def test_skipping_a_container_the_pod_does_not_have_is_denied_with_the_pods_container_names() -> None:
    status = denial(admission_review(make_pod(container("app"), annotations=annotated(skip_containers="sidecar"))))
    assert status["code"] == 422
    assert "token-projector.io/skip-containers" in status["message"]
    assert "sidecar" in status["message"]
    assert "'app'" in status["message"]


def test_already_patched_pod_with_api_server_defaults_yields_no_patch() -> None:
    body = fixture("deployment-pod-annotated.json")
    pod = patched(body)
    pod["spec"]["volumes"][1]["projected"]["defaultMode"] = 420  # what the API server defaults in
    again = run(admission_review(pod))
    assert again.response["response"]["allowed"] is True
    assert "patch" not in again.response["response"]
    assert "warnings" not in again.response["response"]
    assert again.outcome == "unchanged"


def test_volume_without_explicit_expiration_counts_as_the_api_servers_default_of_an_hour() -> None:
    volume = token_volume()
    del volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
    app = container("app", volumeMounts=[TOKEN_MOUNT], env=[TOKEN_ENV])
    assert ops_of(run(admission_review(make_pod(app, annotations=annotated(), volumes=[volume])))) == []


def test_container_added_by_another_webhook_after_the_patch_is_the_only_one_patched() -> None:
    pod = patched(admission_review(make_pod(container("app"), annotations=annotated())))
    pod["spec"]["containers"].append(container("sidecar"))
    ops = ops_of(run(admission_review(pod)))
    assert {op["path"] for op in ops} == {"/spec/containers/1/volumeMounts", "/spec/containers/1/env"}
    final = patched(admission_review(pod))
    assert [v["name"] for v in final["spec"]["volumes"]] == ["audience-token"]
    for c in final["spec"]["containers"]:
        assert c["volumeMounts"] == [TOKEN_MOUNT]
        assert c["env"] == [TOKEN_ENV]


def test_container_that_sets_the_env_var_keeps_its_value_and_the_response_warns() -> None:
    own = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "value": "/custom/token"}
    body = admission_review(make_pod(container("app", env=[own]), annotations=annotated()))
    reviewed = run(body)
    warnings = reviewed.response["response"]["warnings"]
    assert len(warnings) == 1
    assert "'app'" in warnings[0]
    assert "SERVICE_ACCOUNT_TOKEN_PATH" in warnings[0]
    assert "/custom/token" not in warnings[0], "env values never appear in messages"
    c = patched(body)["spec"]["containers"][0]
    assert c["env"] == [own]
    assert c["volumeMounts"] == [TOKEN_MOUNT]


def test_container_that_sets_the_env_var_from_a_reference_keeps_it() -> None:
    own = {"name": "SERVICE_ACCOUNT_TOKEN_PATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    body = admission_review(make_pod(container("app", env=[own]), annotations=annotated()))
    assert patched(body)["spec"]["containers"][0]["env"] == [own]
    assert run(body).response["response"]["warnings"]


@pytest.mark.parametrize("entry", [42, "SERVICE_ACCOUNT_TOKEN_PATH", {"value": "x"}, {"name": 7}, None])
def test_an_env_entry_that_is_not_a_named_object_is_passed_over_and_the_token_variable_still_added(
    entry: object,
) -> None:
    body = admission_review(make_pod(container("app", env=[entry]), annotations=annotated()))
    assert patched(body)["spec"]["containers"][0]["env"] == [TOKEN_ENV, entry]


def test_a_different_volume_named_like_ours_is_denied_and_the_conflict_named() -> None:
    other = {"name": "audience-token", "secret": {"secretName": "my-token"}}
    status = denial(admission_review(make_pod(annotations=annotated(), volumes=[other])))
    assert status["code"] == 422
    assert "'audience-token'" in status["message"]
    assert "secret volume" in status["message"]
    assert "rename" in status["message"]


def test_our_volume_name_with_another_audience_is_denied_and_both_audiences_named() -> None:
    status = denial(admission_review(make_pod(annotations=annotated("data-store"), volumes=[token_volume("billing")])))
    assert "'billing'" in status["message"]
    assert "'data-store'" in status["message"]


@pytest.mark.parametrize(
    "path", ["/var/run/secrets/token-projector.io/tokens", "/var/run/secrets/token-projector.io/tokens/"]
)
def test_another_volume_mounted_at_the_mount_path_is_denied_and_the_conflict_named(path: str) -> None:
    app = container("app", volumeMounts=[{"name": "creds", "mountPath": path}])
    status = denial(
        admission_review(make_pod(app, annotations=annotated(), volumes=[{"name": "creds", "emptyDir": {}}]))
    )
    assert status["code"] == 422
    assert "'app'" in status["message"]
    assert "'creds'" in status["message"]
    assert "token-projector.io/skip-containers: app" in status["message"]


def test_a_mount_path_conflict_in_a_skipped_container_is_no_conflict() -> None:
    other = container(
        "other", volumeMounts=[{"name": "creds", "mountPath": "/var/run/secrets/token-projector.io/tokens"}]
    )
    body = admission_review(
        make_pod(
            container("app"),
            other,
            annotations=annotated(skip_containers="other"),
            volumes=[{"name": "creds", "emptyDir": {}}],
        )
    )
    assert patched(body)["spec"]["containers"][1]["volumeMounts"] == other["volumeMounts"]


def test_expiration_annotation_sets_the_tokens_lifetime() -> None:
    pod = patched(admission_review(make_pod(annotations=annotated(expiration_seconds="7200"))))
    assert pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 7200


def test_every_name_and_default_comes_from_the_contract() -> None:
    contract = Contract(
        annotation_prefix="tokens.example.com",
        volume_name="svc-token",
        mount_path="/run/tok",
        token_file="jwt",
        env_var="TOKEN_FILE",
        default_expiration_seconds=900,
    )
    body = admission_review(make_pod(annotations={"tokens.example.com/audience": "ledger"}))
    pod = patched(body, contract)
    assert pod["spec"]["volumes"] == [
        {
            "name": "svc-token",
            "projected": {
                "sources": [{"serviceAccountToken": {"audience": "ledger", "expirationSeconds": 900, "path": "jwt"}}]
            },
        }
    ]
    c = pod["spec"]["containers"][0]
    assert c["volumeMounts"] == [{"name": "svc-token", "mountPath": "/run/tok", "readOnly": True}]
    assert c["env"] == [{"name": "TOKEN_FILE", "value": "/run/tok/jwt"}]
    # The default prefix no longer opts in.
    assert ops_of(run(admission_review(make_pod(annotations=annotated())), contract)) == []


def test_the_audit_annotation_records_what_was_injected_where() -> None:
    body = admission_review(
        make_pod(container("app"), container("side"), annotations=annotated(skip_containers="side"))
    )
    audit = run(body).response["response"]["auditAnnotations"]
    assert audit == {"injected": "volume=audience-token audience=data-store expirationSeconds=3600 containers=app"}


def test_a_pod_from_generate_name_is_patched_without_a_name() -> None:
    body = fixture("deployment-pod-annotated.json")
    assert "name" not in body["request"]["object"]["metadata"]
    ops = ops_of(run(body))
    assert all(not op["path"].startswith("/metadata") for op in ops)
    assert "name" not in patched(body)["metadata"]
    assert run(body).pod == "api-7d9c6b5f4-<generated>"


def test_patch_applies_to_a_pod_whose_keys_need_json_pointer_escaping() -> None:
    annotations = {**annotated(), "example.com/a~b": "x", "x/y~1z": "y"}
    pod = make_pod(annotations=annotations)
    pod["spec"]["future/field~0"] = {"a/b": 1}
    body = admission_review(pod)
    pod = patched(body)
    assert pod["metadata"]["annotations"] == annotations
    assert pod["spec"]["future/field~0"] == {"a/b": 1}
    assert pod["spec"]["containers"][0]["env"] == [TOKEN_ENV]


def test_the_token_file_path_is_the_mount_path_joined_with_the_token_file() -> None:
    assert Contract().token_path == TOKEN_PATH
    assert Contract(mount_path="/run/tok/").token_path == "/run/tok/token"


def test_the_review_never_modifies_the_request_it_is_given() -> None:
    body = fixture("deployment-pod-annotated.json")
    before = copy.deepcopy(body)
    run(body)
    assert body == before


ONE_AUDIENCE_PATCH = (
    b'[{"op":"add","path":"/spec/volumes/-","value":{"name":"audience-token","projected":{"sources":[{"serviceAccount'
    b'Token":{"audience":"data-store","expirationSeconds":3600,"path":"token"}}]}}},{"op":"add","path":"/spec/containe'
    b'rs/0/volumeMounts/-","value":{"name":"audience-token","mountPath":"/var/run/secrets/tokens","readOnly":true}},{"o'
    b'p":"add","path":"/spec/containers/0/env/0","value":{"name":"SERVICE_ACCOUNT_TOKEN_PATH","value":"/var/run/secret'
    b's/tokens/token"}},{"op":"add","path":"/spec/containers/1/volumeMounts/-","value":{"name":"audience-token","mount'
    b'Path":"/var/run/secrets/tokens","readOnly":true}},{"op":"add","path":"/spec/containers/1/env","value":[{"name":"'
    b'SERVICE_ACCOUNT_TOKEN_PATH","value":"/var/run/secrets/tokens/token"}]}]'
)
"""The patch token-projector gave the Deployment fixture before a Pod could ask for several audiences."""
OLD_PATH = Contract(mount_path="/var/run/secrets/tokens")


def test_a_pod_with_one_audience_gets_the_same_patch_byte_for_byte_as_before_audience_lists() -> None:
    # At the mount path of the time (the default before 0.2.0), kept reachable by the setting.
    response = run(fixture("deployment-pod-annotated.json"), OLD_PATH).response["response"]
    assert base64.b64decode(response["patch"]) == ONE_AUDIENCE_PATCH
    assert response["auditAnnotations"] == {
        "injected": "volume=audience-token audience=data-store expirationSeconds=3600 containers=api,metrics-exporter"
    }
    assert "SERVICE_ACCOUNT_TOKEN_DIR" not in ONE_AUDIENCE_PATCH.decode(), "no second variable for one audience"
