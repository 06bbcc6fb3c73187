"""The verifying proxy as a native sidecar: what a Pod with the protect annotations gets, and every refusal."""

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from audience_token.errors import ConfigError as LibraryConfigError
from audience_token.identity import AllowPattern
from tests.helpers import DEFAULT, admission_review, annotated, container, denial, make_pod, ops_of, patched, run
from webhook.cli.command import parser
from webhook.cli.options import load
from webhook.cli.proxy import ProxySettings
from webhook.core.contract import Contract
from webhook.core.review import review
from webhook.core.service_accounts import AccountAnnotations
from webhook.core.sidecar import PROXY_CONTAINER, _allow
from webhook.core.wire import Json
from webhook.errors import Denied

API_VOLUME = "kube-api-access-x7k2p"
API_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
API_MOUNT = {"name": API_VOLUME, "mountPath": API_PATH, "readOnly": True}
PROTECT = {
    "token-projector.io/protect-port": "http",
    "token-projector.io/protect-audience": "secret-store",
    "token-projector.io/protect-allow": "api/api, web/*",
}


def api_volume() -> Json:
    """What the ServiceAccount admission plugin adds before any webhook sees the Pod."""
    return {
        "name": API_VOLUME,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


def app(**fields: Any) -> Json:
    ports = fields.pop("ports", [{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    mounts = fields.pop("volumeMounts", [dict(API_MOUNT)])
    return container("app", ports=ports, volumeMounts=mounts, **fields)


def protected(*containers: Json, annotations: dict[str, str] | None = None, **spec: Any) -> Json:
    """An AdmissionReview of a Pod with the protect annotations, as the API server sends it."""
    pod = make_pod(
        *(containers or (app(),)),
        annotations={**PROTECT, **(annotations or {})},
        volumes=spec.pop("volumes", [api_volume()]),
        serviceAccountName="secret-store",
        **spec,
    )
    return admission_review(pod)


def without(key: str) -> dict[str, str]:
    return {k: v for k, v in PROTECT.items() if k != f"token-projector.io/{key}"}


def proxy_of(pod: Json) -> Json:
    found: list[Json] = [c for c in pod["spec"].get("initContainers", []) if c["name"] == PROXY_CONTAINER]
    assert len(found) == 1, pod["spec"].get("initContainers")
    return found[0]


def message(body: Json, contract: Contract = DEFAULT) -> str:
    status = denial(body, contract)
    assert status["code"] in (403, 422), status
    return str(status["message"])


def test_a_pod_with_the_protect_annotations_gets_the_proxy_as_a_native_sidecar_in_front_of_its_port() -> None:
    body = protected()
    pod = patched(body)
    proxy = proxy_of(pod)
    assert proxy["restartPolicy"] == "Always"
    assert proxy["image"] == Contract().proxy_image == "token-projector:0.2.0"
    assert proxy["command"] == ["token-projector", "proxy"]
    assert proxy["args"] == [
        "--upstream=http://127.0.0.1:8080",
        "--audience=secret-store",
        "--allow=api/api,web/*",
        "--port=8443",
        "--probe-port=8444",
    ]
    assert proxy["ports"] == [
        {"name": "token-proxy", "containerPort": 8443, "protocol": "TCP"},
        {"name": "proxy-probes", "containerPort": 8444, "protocol": "TCP"},
    ]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "proxy-probes"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "proxy-probes"}
    assert proxy["resources"]["limits"]["memory"]
    assert proxy["resources"]["requests"]["cpu"]
    # The Pod's own service account token, and nothing else: no caller's token, no env.
    assert proxy["volumeMounts"] == [API_MOUNT]
    assert "env" not in proxy
    # The app is untouched.
    assert pod["spec"]["containers"] == body["request"]["object"]["spec"]["containers"]
    audit = run(body).response["response"]["auditAnnotations"]
    assert audit == {
        "proxy-injected": "container=token-projector-proxy port=8080 audience=secret-store allow=api/api,web/*"
    }


def test_the_proxy_runs_restricted_non_root_read_only_without_capabilities() -> None:
    context = proxy_of(patched(protected()))["securityContext"]
    assert context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_patched_pod_is_a_valid_pod_for_the_kubernetes_schema() -> None:
    pod = patched(protected(annotations={"token-projector.io/audience": "data-store"}))
    kubernetes_validate.validate(pod, "1.37.0", strict=True)


def test_the_port_may_be_named_by_number_and_the_proxy_is_appended_after_existing_init_containers() -> None:
    setup = container("setup")
    pod = patched(protected(annotations={"token-projector.io/protect-port": "8080"}, initContainers=[setup]))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["setup", PROXY_CONTAINER]
    assert proxy_of(pod)["args"][0] == "--upstream=http://127.0.0.1:8080"


def test_a_port_declared_by_a_native_sidecar_of_the_pod_can_be_protected() -> None:
    sidecar = container("grpc", restartPolicy="Always", ports=[{"name": "grpc", "containerPort": 9090}])
    pod = patched(protected(annotations={"token-projector.io/protect-port": "grpc"}, initContainers=[sidecar]))
    assert proxy_of(pod)["args"][0] == "--upstream=http://127.0.0.1:9090"


def test_the_proxys_arguments_are_settings_token_projector_proxy_accepts_as_they_are() -> None:
    proxy = proxy_of(patched(protected()))
    args = parser().parse_args([*proxy["command"][1:], *proxy["args"]])
    settings = load(ProxySettings, args, environ={})
    assert settings.upstream == "http://127.0.0.1:8080"
    assert settings.audience == "secret-store"
    assert settings.allow == ("api/api", "web/*")
    assert (settings.port, settings.probe_port) == (8443, 8444)
    assert settings.verification == "tokenreview"


def test_an_audience_that_starts_with_a_dash_is_still_one_value_for_the_proxy() -> None:
    proxy = proxy_of(patched(protected(annotations={"token-projector.io/protect-audience": "-store"})))
    settings = load(ProxySettings, parser().parse_args([*proxy["command"][1:], *proxy["args"]]), environ={})
    assert settings.audience == "-store"


def test_a_second_review_of_the_patched_pod_adds_nothing_also_after_the_api_server_defaulted_the_proxy() -> None:
    body = protected()
    pod = patched(body)
    assert ops_of(run(admission_review(pod))) == []
    defaulted = copy.deepcopy(pod)
    proxy = proxy_of(defaulted)
    proxy.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
    proxy["readinessProbe"].update(timeoutSeconds=1, successThreshold=1)
    proxy["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    assert ops_of(run(admission_review(defaulted))) == []


def test_with_an_audience_token_too_the_app_gets_the_token_and_the_proxy_does_not_even_on_reinvocation() -> None:
    body = protected(annotations={"token-projector.io/audience": "data-store"})
    pod = patched(body)
    app_mounts = [m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert "audience-token" in app_mounts
    assert [m["name"] for m in proxy_of(pod)["volumeMounts"]] == [API_VOLUME]
    assert set(run(body).response["response"]["auditAnnotations"]) == {"injected", "proxy-injected"}
    # Re-invoked (say a later webhook added a container): the proxy still gets no caller's token.
    later = copy.deepcopy(pod)
    later["spec"]["containers"].append(container("later"))
    ops = ops_of(run(admission_review(later)))
    assert ops
    assert all(op["path"].startswith("/spec/containers/1/") for op in ops)


def test_a_pod_with_only_the_audience_annotation_gets_no_proxy() -> None:
    pod = patched(admission_review(make_pod(app(), annotations=annotated())))
    assert "initContainers" not in pod["spec"]


def test_the_protect_annotations_are_known_so_none_is_warned_about_as_a_typo() -> None:
    assert "warnings" not in run(protected()).response["response"]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("9090", "'9090', a port no container of the Pod declares (declared: http (8080))"),
        ("metrics", "'metrics', a port no container of the Pod declares (declared: http (8080))"),
        ("Not A Port!", "neither a port number nor a port name"),
    ],
)
def test_a_port_the_pod_does_not_declare_is_refused_naming_the_annotation_and_the_declared_ports(
    value: str, said: str
) -> None:
    text = message(protected(annotations={"token-projector.io/protect-port": value}))
    assert text.startswith("annotation token-projector.io/protect-port is ")
    assert said in text
    assert "e.g. token-projector.io/protect-port: http" in text


def test_a_udp_port_is_refused_the_proxy_speaks_http_over_tcp() -> None:
    body = protected(app(ports=[{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]))
    body["request"]["object"]["metadata"]["annotations"]["token-projector.io/protect-port"] = "dns"
    assert "a 'UDP' port of container 'app'; the proxy speaks HTTP over TCP" in message(body)


@pytest.mark.parametrize(
    ("missing", "fix"),
    [
        ("protect-allow", "list the callers to let in, as NAMESPACE/SERVICEACCOUNT patterns"),
        ("protect-audience", "name the audience callers' tokens must be for"),
        ("protect-port", "name the app's container port to protect"),
    ],
)
def test_a_missing_protect_annotation_is_refused_naming_it_and_what_to_write(missing: str, fix: str) -> None:
    body = admission_review(make_pod(app(), annotations=without(missing), volumes=[api_volume()]))
    text = message(body)
    assert f"without token-projector.io/{missing}: {fix}" in text


@pytest.mark.parametrize("value", ["", " , ", "api", "api/api/x", "Api/api", "api/a_b", "a*/api"])
def test_an_allow_list_that_names_no_caller_or_a_bad_pattern_is_refused(value: str) -> None:
    text = message(protected(annotations={"token-projector.io/protect-allow": value}))
    assert "annotation token-projector.io/protect-allow" in text
    assert "NAMESPACE/SERVICEACCOUNT" in text


PATTERNS = ["api/api", "*/*", "api/*", "*/api", "a/b.c", "a-b/c-d", "A/b", "a/B", "a/", "/a", "a/b/c", "a b/c"]
PATTERNS += ["a/b_c", "-a/b", "a" * 63 + "/x", "a" * 64 + "/x", "x/" + "a" * 253, "x/" + "a" * 254, "x/a..b"]
PATTERNS += ["x/.a", "*a/b", "x/" + "a" * 64 + ".b"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_webhook_accepts_exactly_the_allow_patterns_the_proxys_library_accepts(pattern: str) -> None:
    try:
        AllowPattern.parse(pattern)
        library = True
    except LibraryConfigError:
        library = False
    try:
        _allow(pattern, key="k")
        webhook = True
    except Denied:
        webhook = False
    assert webhook == library


@pytest.mark.parametrize("audience", ["https://kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
def test_an_api_server_audience_is_refused_it_would_let_any_api_token_in(audience: str) -> None:
    text = message(protected(annotations={"token-projector.io/protect-audience": audience}))
    assert f"annotation token-projector.io/protect-audience is {audience!r}, an audience of the Kubernetes API" in text
    assert "name your own service's audience instead" in text


def test_an_empty_or_listed_audience_is_refused() -> None:
    assert "is empty" in message(protected(annotations={"token-projector.io/protect-audience": ""}))
    listed = message(protected(annotations={"token-projector.io/protect-audience": "a, b"}))
    assert "a list; the proxy verifies one audience" in listed


def test_an_audience_outside_the_allowed_audiences_is_refused_as_for_a_token() -> None:
    text = message(protected(), Contract(allowed_audiences=("data-*",)))
    assert "is not an audience this cluster allows" in text


@pytest.mark.parametrize(("port", "setting"), [(8443, "--proxy-port"), (8444, "--proxy-probe-port")])
def test_a_port_of_the_pod_that_the_proxy_needs_is_refused_naming_the_setting(port: int, setting: str) -> None:
    other = container("metrics", ports=[{"containerPort": port}])
    text = message(protected(app(), other))
    assert f"the proxy listens on port {port} (this cluster's {setting}), and container 'metrics' declares" in text
    assert "move the app to another port" in text


def test_protecting_the_proxys_own_port_is_a_clash_too() -> None:
    body = protected(app(ports=[{"name": "https", "containerPort": 8443}]))
    body["request"]["object"]["metadata"]["annotations"]["token-projector.io/protect-port"] = "https"
    assert "declares port 8443 (the port it protects)" in message(body)


def test_the_proxys_ports_are_a_setting_that_moves_them_out_of_the_way() -> None:
    body = protected(app(ports=[{"name": "http", "containerPort": 8443}]))
    pod = patched(body, Contract(proxy_port=9443, proxy_probe_port=9444))
    assert proxy_of(pod)["ports"][0] == {"name": "token-proxy", "containerPort": 9443, "protocol": "TCP"}
    assert "--port=9443" in proxy_of(pod)["args"]


def test_a_port_named_like_the_proxys_is_refused() -> None:
    other = container("other", ports=[{"name": "token-proxy", "containerPort": 9000}])
    assert "declares a port named 'token-proxy', the name of the proxy's own port" in message(protected(app(), other))


def test_a_pod_that_does_not_mount_its_service_account_token_is_refused_with_the_fix() -> None:
    body = protected(app(volumeMounts=[]), volumes=[], automountServiceAccountToken=False)
    text = message(body)
    assert "the Pod does not mount it (the Pod sets automountServiceAccountToken: false)" in text
    assert "set automountServiceAccountToken: true in the Pod spec" in text
    assert "audience-token-reviewer" in text
    by_account = message(protected(app(volumeMounts=[]), volumes=[]))
    assert "its ServiceAccount 'secret-store' sets automountServiceAccountToken: false" in by_account


def test_in_strict_mode_a_pod_that_is_protected_alone_is_admitted() -> None:
    assert proxy_of(patched(protected(), Contract(strict=True)))


def test_in_strict_mode_a_pod_asking_for_an_audience_token_and_the_proxy_is_refused_saying_why() -> None:
    body = protected(annotations={"token-projector.io/audience": "data-store"})
    status = denial(body, Contract(strict=True))
    assert "strict mode" in status["message"]
    assert "run the caller and the protected service in separate Pods" in status["message"]


def test_without_native_sidecars_a_pod_asking_for_the_proxy_is_refused_saying_why() -> None:
    text = message(protected(), Contract(native_sidecars=False))
    assert "--no-native-sidecars" in text
    assert "Kubernetes 1.29+" in text


def test_another_container_named_like_the_proxy_is_refused() -> None:
    mine = container(PROXY_CONTAINER, restartPolicy="Always")
    assert "already has a container named 'token-projector-proxy'" in message(protected(initContainers=[mine]))


def test_the_refusals_never_quote_a_value_longer_than_a_message_allows() -> None:
    text = message(protected(annotations={"token-projector.io/protect-port": "x" * 10_000}))
    assert len(text) < 1000


def test_a_protect_annotation_on_a_serviceaccount_is_ignored_with_a_warning_that_says_where_it_belongs() -> None:
    account = AccountAnnotations(namespace="api", name="secret-store", annotations=dict(PROTECT))
    body = admission_review(make_pod(app(), annotations=annotated(), volumes=[api_volume()]))
    response = review(body, DEFAULT, service_account=account).response["response"]
    assert response["allowed"]
    assert "initContainers" not in json.dumps(ops_of(review(body, DEFAULT, service_account=account)))
    assert (
        "annotation token-projector.io/protect-port on ServiceAccount api/secret-store was ignored: it asks for the "
        "verifying proxy before a Pod's port, so it belongs on the Pod (template)"
    ) in response["warnings"]


@pytest.mark.parametrize("hostile", [{}, [8443], "8443", None, 8443.0, True])
def test_a_container_port_of_any_json_type_is_passed_over_never_a_crash(hostile: object) -> None:
    other = container("other", ports=[{"containerPort": hostile}, "not an object", {"name": ["x"]}])
    body = protected(app(), other)
    assert proxy_of(patched(body))["name"] == PROXY_CONTAINER


def test_a_host_network_pod_is_refused_its_loopback_is_the_nodes_so_callers_could_bypass_the_proxy() -> None:
    text = message(protected(hostNetwork=True))
    assert "hostNetwork: true" in text
    assert "token-projector.io/protect-port" in text
    assert "Fix: run the Pod on the Pod network (remove hostNetwork)" in text


def test_a_pod_that_sets_host_network_false_gets_the_proxy() -> None:
    proxy_of(patched(protected(hostNetwork=False)))
