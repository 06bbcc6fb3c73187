"""POST /mutate over real TLS: answers, every class of bad request, concurrency, metrics, logs."""

import asyncio
import base64
import copy
import json
import logging
from typing import Any

import jsonpatch
import pytest

from tests.helpers import TOKEN_ENV, admission_review, annotated, container, fixture, make_pod
from tests.server.conftest import StartWebhook, Webhook
from webhook.core.contract import Contract
from webhook.core.review import Reviewed
from webhook.server.logs import JsonFormatter

ANNOTATED = fixture("deployment-pod-annotated.json")


def body_of(review: dict[str, Any]) -> bytes:
    return json.dumps(review).encode()


async def test_an_annotated_pod_gets_a_patch_that_applies_to_its_object(webhook: Webhook) -> None:
    async with await webhook.post(body_of(ANNOTATED)) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        answer = await response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == ANNOTATED["request"]["uid"]
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    pod = jsonpatch.apply_patch(copy.deepcopy(ANNOTATED["request"]["object"]), ops)
    assert all(TOKEN_ENV in c["env"] for c in pod["spec"]["containers"])


async def test_a_denial_is_an_http_200_answer_with_allowed_false(webhook: Webhook) -> None:
    async with await webhook.post(body_of(fixture("legacy-token-pod-annotated.json"))) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 403


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, "body is not valid JSON"),
        (b"", "application/json", 400, "body is not valid JSON"),
        (b"\xff\xfe{}", "application/json", 400, "body is not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "body is not valid JSON"),
        (b'{"kind": "Pod"}', "application/json", 400, "kind must be AdmissionReview"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "application/json", 400, "no request"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
            "application/json",
            400,
            "request.uid must be a non-empty string",
        ),
        (body_of(ANNOTATED), "text/plain", 415, "Content-Type must be application/json, got text/plain"),
        (body_of(ANNOTATED), "application/x-www-form-urlencoded", 415, "Content-Type must be application/json"),
        (b"x" * (64 * 1024 + 1), "application/json", 413, "over the limit of 65536"),
    ],
)
async def test_a_bad_request_gets_a_json_error_naming_the_problem_and_the_server_keeps_serving(
    webhook: Webhook, body: bytes, content_type: str, status: int, message: str
) -> None:
    async with await webhook.post(body, content_type=content_type) as response:
        assert response.status == status
        answer = await response.json()
    assert message in answer["error"]
    assert answer["code"] == status
    async with await webhook.post(body_of(ANNOTATED)) as response:
        assert response.status == 200


async def test_an_oversize_body_without_a_length_header_is_refused_while_being_read(webhook: Webhook) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 8192

    async with await webhook.post(chunks()) as response:
        assert response.status == 413
        assert "over the limit" in (await response.json())["error"]


async def test_a_body_that_arrives_too_slowly_gets_408(webhook: Webhook) -> None:
    async def slow() -> Any:
        yield b'{"kind": '
        await asyncio.sleep(1.5)  # read_timeout_seconds is 1 in this fixture
        yield b'"AdmissionReview"}'

    async with await webhook.post(slow()) as response:
        assert response.status == 408
        assert "not received within 1 seconds" in (await response.json())["error"]


async def test_a_wrong_method_or_path_is_not_a_server_error(webhook: Webhook) -> None:
    async with webhook.session.get(f"{webhook.url}/mutate") as response:
        assert response.status == 405
    async with webhook.session.post(f"{webhook.url}/validate", data=b"{}") as response:
        assert response.status == 404


async def test_an_unexpected_failure_is_a_bare_500_without_details_and_is_logged(
    start_webhook: StartWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_review(raw: bytes, contract: Contract) -> Reviewed:  # a fake: the real review never raises this
        raise RuntimeError("internal detail that must not leak")

    webhook = await start_webhook(review=broken_review)
    async with await webhook.post(body_of(ANNOTATED)) as response:
        assert response.status == 500
        text = await response.text()
    assert "internal detail" not in text
    assert "Traceback" not in text
    assert json.loads(text) == {"error": "internal error; see the webhook's logs", "code": 500}
    assert any(r.exc_info and "internal detail" in str(r.exc_info[1]) for r in caplog.records)


async def test_concurrent_requests_each_get_their_own_answer(webhook: Webhook) -> None:
    async def one(i: int) -> tuple[str, str]:
        body = admission_review(make_pod(annotations=annotated(f"aud-{i}")), uid=f"uid-{i}")
        async with await webhook.post(body_of(body)) as response:
            answer = await response.json()
        ops = json.loads(base64.b64decode(answer["response"]["patch"]))
        return answer["response"]["uid"], ops[0]["value"][0]["projected"]["sources"][0]["serviceAccountToken"][
            "audience"
        ]

    results = await asyncio.gather(*(one(i) for i in range(64)))
    assert results == [(f"uid-{i}", f"aud-{i}") for i in range(64)]


async def test_v1beta1_reviews_are_answered_in_v1beta1(webhook: Webhook) -> None:
    body = admission_review(make_pod(annotations=annotated()), api_version="admission.k8s.io/v1beta1")
    async with await webhook.post(body_of(body)) as response:
        assert (await response.json())["apiVersion"] == "admission.k8s.io/v1beta1"


async def test_metrics_count_each_outcome_and_observe_latency(webhook: Webhook) -> None:
    for body in (
        body_of(ANNOTATED),
        body_of(ANNOTATED),
        body_of(admission_review(make_pod())),
        body_of(fixture("legacy-token-pod-annotated.json")),
        b"nope",
    ):
        async with await webhook.post(body) as response:
            await response.read()
    status, text = await webhook.probe("/metrics")
    assert status == 200
    for line in [
        'token_projector_webhook_requests_total{code="200",outcome="mutated",webhook="mutate"} 2.0',
        'token_projector_webhook_requests_total{code="200",outcome="unchanged",webhook="mutate"} 1.0',
        'token_projector_webhook_requests_total{code="200",outcome="denied",webhook="mutate"} 1.0',
        'token_projector_webhook_requests_total{code="400",outcome="error",webhook="mutate"} 1.0',
        'token_projector_webhook_latency_seconds_count{webhook="mutate"} 5.0',
        'token_projector_webhook_requests_in_flight{webhook="mutate"} 0.0',
    ]:
        assert line in text, line
    assert "token_projector_tls_certificate_not_after_timestamp_seconds " in text


async def test_probes_report_alive_and_ready_and_not_ready_while_draining(webhook: Webhook) -> None:
    assert (await webhook.probe("/healthz"))[0] == 200
    assert (await webhook.probe("/readyz"))[0] == 200
    webhook.lifecycle.ready = False
    assert (await webhook.probe("/readyz"))[0] == 503
    assert (await webhook.probe("/healthz"))[0] == 200
    async with webhook.session.get(f"{webhook.url}/readyz") as response:
        assert response.status == 503, "the HTTPS port reports the same readiness"


async def test_the_plain_http_probe_port_never_serves_admission(webhook: Webhook) -> None:
    async with webhook.session.post(
        f"http://127.0.0.1:{webhook.probes.port}/mutate",
        data=body_of(ANNOTATED),
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 404


async def test_each_request_logs_one_json_line_with_its_identity_and_never_env_values_or_tokens(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    secret_env = {"name": "DB_PASSWORD", "value": "hunter2-s3cr3t"}
    pod = make_pod(container("app", env=[secret_env]), annotations=annotated())
    pod["metadata"]["annotations"]["note"] = "eyJhbGciOiJSUzI1NiJ9.token-looking"
    caplog.set_level(logging.INFO, logger="token_projector.server")
    async with await webhook.post(body_of(admission_review(pod, uid="log-uid"))) as response:
        await response.read()
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "token_projector.server"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "admission review"
    assert (entry["uid"], entry["namespace"], entry["pod"], entry["outcome"]) == ("log-uid", "api", "app", "mutated")
    assert entry["latency_ms"] > 0
    assert "hunter2" not in lines[0]
    assert "eyJhbGci" not in lines[0]
    assert "containers" not in lines[0], "no Pod spec in logs"
