"""The worked example (examples/api-and-data-store) against the real API server: issue 16's eight proofs.

Its manifests are applied with ``kubectl apply -k``; each Pod is created from its Deployment's template
through the API server (token-projector registered, so the api's Pod gets its token volume there). A
stand-in plays the kubelet's part (``example_kubelet``; ``tests/node/`` runs the real one): the token is minted from the
volume *as stored* (audience, expiration, bound to the Pod) and written in the kubelet's layout, and
the api's ``SERVICE_ACCOUNT_TOKEN_PATH`` names it. The data store runs with its own ServiceAccount's
token (its Pod's ``kube-api-access`` volume, minted the same way), which the manifests bind to the
least-privilege TokenReview ClusterRole, in a kubeconfig for this API server. Both run as processes on
loopback (``example_services``). TokenReviews are counted at the API server (``/metrics``), as
differences around this test's own calls, after the count has settled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.e2e import example_services
from tests.e2e.conftest import ControlPlane, Registered
from tests.e2e.example_cluster import Installed, allowed, install, legacy_token, pod_from
from tests.e2e.example_kubelet import Projection, container, env_of
from tests.e2e.example_services import Service
from tests.e2e.pods import annotated
from tests.e2e.reviewer_support import Forwarder, tokenreviews_served
from tests.e2e.tokens import claims_of, review, token_bound_to

pytestmark = pytest.mark.e2e

AUDIENCE_ANNOTATION = "token-projector.io/audience"
TOKEN_VOLUME = "audience-token"
REFRESH_SECONDS = 0.5
"""The api's TOKEN_REFRESH_SECONDS here (default 1 s): how soon a rotated token must be sent."""
CACHE_SECONDS = 3.0
"""The data store's REVIEW_CACHE_SECONDS here (the manifests say 10): the TTL of a verdict."""
API_SERVER_CACHE_SECONDS = 10
"""kube-apiserver keeps a successful token authentication this long (TokenSuccessCacheTTL)."""
BURST = 2_000


def start_api(
    control_plane: ControlPlane, pod: dict[str, Any], *, data_store: Service, workdir: Path, name: str
) -> tuple[Projection, Service]:
    """An api process for a stored api Pod, with that Pod's token projected the kubelet's way."""
    projection = Projection.of(control_plane, pod, volume=TOKEN_VOLUME, root=workdir / name)
    env = env_of(container(pod, "api"))
    service = example_services.api(
        env=env,
        token_path=projection.host_path("api", env["SERVICE_ACCOUNT_TOKEN_PATH"]),
        data_store=data_store,
        log_file=workdir / f"{name}.log",
        refresh_seconds=REFRESH_SECONDS,
    )
    return projection, service


@dataclass
class Example:
    control_plane: ControlPlane
    installed: Installed
    workdir: Path
    data_store: Service
    data_store_env: dict[str, str]
    """The data store container's environment in its stored Pod."""
    data_store_kubeconfig: Path
    api_pod: dict[str, Any]
    api_token: Projection
    api: Service
    started: list[Service]
    """Every process started for this module, stopped at its end."""

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.installed.api}:api"

    def api_for(self, pod: dict[str, Any], *, name: str) -> tuple[Projection, Service]:
        projection, service = start_api(
            self.control_plane, pod, data_store=self.data_store, workdir=self.workdir, name=name
        )
        self.started.append(service)
        return projection, service


@pytest.fixture(scope="module")
def example(
    registered: Registered, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    work = tmp_path_factory.mktemp("example-api-and-data-store")
    installed = install(control_plane)
    started: list[Service] = []
    try:
        store_pod = pod_from(control_plane, installed.deployment(installed.data_store))
        api_access = next(v["name"] for v in store_pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-"))
        credential = Projection.of(control_plane, store_pod, volume=api_access, root=work / "data-store-api-access")
        kubeconfig = control_plane.kubeconfig(token=credential.token, name="data-store")
        store_env = env_of(container(store_pod, "data-store"))
        store = example_services.data_store(
            env=store_env, kubeconfig=kubeconfig, log_file=work / "data-store.log", cache_seconds=CACHE_SECONDS
        )
        started.append(store)
        api_pod = pod_from(control_plane, installed.deployment(installed.api))
        api_token, api = start_api(control_plane, api_pod, data_store=store, workdir=work, name="api")
        started.append(api)
        yield Example(control_plane, installed, work, store, store_env, kubeconfig, api_pod, api_token, api, started)
    finally:
        for service in reversed(started):
            service.stop()


async def call(url: str, *, token: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of ``GET url``, with ``token`` as a Bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        body = await response.read()
        return response.status, json.loads(body), dict(response.headers)


def settled_reviews(control_plane: ControlPlane) -> int:
    """TokenReviews served so far, once the count stops moving (a request's metric lands just after its answer)."""
    last, deadline = tokenreviews_served(control_plane), time.monotonic() + 30
    while True:
        time.sleep(0.3)
        now = tokenreviews_served(control_plane)
        if now == last:
            return now
        assert time.monotonic() < deadline, "TokenReviews kept coming for 30 s: something else is making them"
        last = now


def shows_none_of(log: str, *tokens: str) -> bool:
    """Neither a token nor its signature (the part that makes it usable) appears in ``log``."""
    return not any(token in log or token.split(".")[-1] in log for token in tokens)


@pytest.mark.parametrize(
    ("name", "env", "says"),
    [
        ("api", {}, "SERVICE_ACCOUNT_TOKEN_PATH is not set: token-projector sets it"),
        ("api", {"SERVICE_ACCOUNT_TOKEN_PATH": "/nonexistent/token"}, "no token could be read from /nonexistent/token"),
        (
            "api",
            {"SERVICE_ACCOUNT_TOKEN_PATH": "t", "DATA_STORE_URL": "data-store:80"},
            "DATA_STORE_URL='data-store:80'",
        ),
        ("data-store", {}, "set KUBECONFIG=PATH to run the data store outside a cluster"),
        ("data-store", {"KUBECONFIG": "/nonexistent"}, "the kubeconfig '/nonexistent' cannot be read"),
        ("data-store", {"KUBECONFIG": "k", "ALLOW": "api"}, "allow pattern 'api' must be NAMESPACE/SERVICEACCOUNT"),
        ("data-store", {"KUBECONFIG": "k", "ALLOW": " , "}, "ALLOW=' , ': list the callers to accept"),
        ("data-store", {"REVIEW_CACHE_SECONDS": "-1"}, "REVIEW_CACHE_SECONDS='-1': write a number of seconds"),
        ("data-store", {"PORT": "99999"}, "PORT='99999': write a TCP port number"),
    ],
)
def test_a_service_with_a_setting_that_cannot_work_refuses_to_start_in_one_line_naming_it(
    name: str, env: dict[str, str], says: str
) -> None:
    result = example_services.run_to_exit(name, env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{name}: cannot start: ")
    assert says in result.stderr
    assert result.stderr.count("\n") == 1, "one line, no traceback"


def test_the_manifests_give_the_api_its_token_and_no_api_credential_and_the_data_store_only_tokenreviews(
    example: Example,
) -> None:
    volumes = {v["name"]: v for v in example.api_pod["spec"]["volumes"]}
    assert example.api_token.source == {"audience": "data-store", "expirationSeconds": 3600, "path": "token"}
    assert not [name for name in volumes if name.startswith("kube-api-access-")], "the api has no API credential"
    assert (
        env_of(container(example.api_pod, "api"))["SERVICE_ACCOUNT_TOKEN_PATH"]
        == "/var/run/secrets/token-projector.io/tokens/token"
    )
    binding = example.control_plane.request(
        "GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/" + example.installed.binding
    )
    assert binding["roleRef"]["name"] == "audience-token-reviewer"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "data-store", "namespace": example.installed.data_store}
    ]
    user = f"system:serviceaccount:{example.installed.data_store}:data-store"
    may = {
        (verb, group, resource): allowed(example.control_plane, user, verb=verb, group=group, resource=resource)
        for verb, group, resource in [
            ("create", "authentication.k8s.io", "tokenreviews"),
            ("create", "authorization.k8s.io", "subjectaccessreviews"),
            ("get", "", "secrets"),
            ("list", "", "pods"),
        ]
    }
    assert may == {
        ("create", "authentication.k8s.io", "tokenreviews"): True,
        ("create", "authorization.k8s.io", "subjectaccessreviews"): False,
        ("get", "", "secrets"): False,
        ("list", "", "pods"): False,
    }


async def test_1_the_api_answers_with_the_data_store_naming_the_api_service_account_and_its_pod(
    example: Example,
) -> None:
    status, body, _ = await call(example.api.url + "/")
    pod = example.api_pod["metadata"]["name"]
    assert status == 200, body
    assert body["message"] == f"authenticated as {example.username} from Pod {example.installed.api}/{pod}"
    assert body["username"] == example.username
    assert body["pod"] == pod
    assert body["credential_id"] == f"JTI={claims_of(example.api_token.token)['jti']}"


async def test_2_a_token_for_another_audience_is_refused_with_401_naming_the_audience_and_no_log_shows_it(
    example: Example,
) -> None:
    # The api deployed with the wrong annotation: its Pod gets a token for the secret store, not for us.
    deployment = example.installed.deployment(example.installed.api)
    wrong = pod_from(example.control_plane, deployment, annotations={AUDIENCE_ANNOTATION: "secret-store"})
    projection, misconfigured = example.api_for(wrong, name="api-secret-store")
    assert projection.source["audience"] == "secret-store"

    status, body, headers = await call(example.data_store.url + "/", token=projection.token)
    assert status == 401
    assert body["reason"] == "wrong_audience"
    assert "'data-store'" in body["message"]
    assert "'secret-store'" in body["message"]
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]

    status, through_api, _ = await call(misconfigured.url + "/")
    assert (status, through_api) == (401, body), "the api returns the data store's answer"
    assert "the data store refused our token: 401 invalid_token (wrong_audience)" in misconfigured.log
    assert shows_none_of(misconfigured.log, projection.token)
    assert shows_none_of(example.data_store.log, projection.token)


async def test_3_another_service_account_with_a_data_store_token_is_forbidden(example: Example) -> None:
    namespace = example.control_plane.namespace()
    other = example.control_plane.create_pod(namespace, annotated(audience="data-store"))
    token = Projection.of(example.control_plane, other, volume=TOKEN_VOLUME, root=example.workdir / "other").token

    status, body, headers = await call(example.data_store.url + "/", token=token)
    assert status == 403
    assert body["error"] == "insufficient_scope"
    assert f"{namespace}/app" in body["message"]
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert shows_none_of(example.data_store.log, token)


async def test_4_a_legacy_secret_token_or_garbage_is_refused_with_401_and_garbage_costs_no_token_review(
    example: Example,
) -> None:
    legacy = legacy_token(example.control_plane, example.installed.api, "api")
    # It is a real legacy token: the API server takes it as the api's Kubernetes API credential.
    as_api_credential = review(example.control_plane, legacy, audience=None)
    assert as_api_credential["authenticated"] is True
    assert as_api_credential["user"]["username"] == example.username

    status, body, _ = await call(example.data_store.url + "/", token=legacy)
    assert status == 401
    assert body["reason"] == "wrong_audience"
    assert "legacy token" in body["message"]

    garbage = ["not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 8_000, legacy.split(".", 1)[1]]
    before = await asyncio.to_thread(settled_reviews, example.control_plane)
    answers = [await call(example.data_store.url + "/", token=value) for value in garbage]
    missing = await call(example.data_store.url + "/")
    after = await asyncio.to_thread(settled_reviews, example.control_plane)
    assert [(status, body["reason"]) for status, body, _ in answers] == [(401, "malformed")] * len(garbage)
    assert (missing[0], missing[1]["reason"]) == (401, "missing")
    assert after - before == 0, f"{after - before} TokenReviews for tokens that cannot be tokens"
    assert shows_none_of(example.data_store.log, legacy)


async def test_5_a_token_the_kubelet_rotates_is_sent_within_the_refresh_period_and_accepted(example: Example) -> None:
    old = example.api_token.token
    new = example.api_token.rotate()
    await asyncio.sleep(REFRESH_SECONDS + 0.1)

    status, body, _ = await call(example.api.url + "/")
    assert status == 200, body
    assert body["credential_id"] == f"JTI={claims_of(new)['jti']}", "the api sends the rotated token"
    assert body["credential_id"] != f"JTI={claims_of(old)['jti']}"
    # The kubelet rotates at 80% of the token's life: the old one stays good until its exp.
    assert (await call(example.data_store.url + "/", token=old))[0] == 200

    deadline = time.monotonic() + 5
    while "re-read the rotated service account token" not in example.api.log:
        assert time.monotonic() < deadline, f"no rotation logged:\n{example.api.log[-2000:]}"
        await asyncio.sleep(0.1)
    assert shows_none_of(example.api.log, old, new)


async def test_6_once_the_api_pod_is_deleted_its_token_is_refused_after_the_cache_ttl(example: Example) -> None:
    replica = pod_from(example.control_plane, example.installed.deployment(example.installed.api))
    projection, api = example.api_for(replica, name="api-replica")
    status, body, _ = await call(api.url + "/")
    assert (status, body["pod"]) == (200, replica["metadata"]["name"])

    namespace, name = example.installed.api, replica["metadata"]["name"]
    example.control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
    deleted_at = time.monotonic()
    assert (await call(api.url + "/"))[0] == 200, "inside the TTL the cached acceptance answers"

    statuses = []
    while True:
        status, body, _ = await call(api.url + "/")
        statuses.append(status)
        if status != 200:
            break
        assert time.monotonic() - deleted_at < CACHE_SECONDS + API_SERVER_CACHE_SECONDS + 5, "still accepted"
        await asyncio.sleep(0.25)
    assert (status, body["reason"]) == (401, "expired_or_revoked")
    assert set(statuses[:-1]) <= {200}
    assert "refused our token: 401 invalid_token (expired_or_revoked)" in api.log
    assert shows_none_of(api.log, projection.token)


async def test_7_with_the_api_server_unreachable_the_data_store_answers_503_and_never_200(example: Example) -> None:
    # The shared control plane stays up: this data store reaches it through a loopback TCP forwarder
    # (reviewer_support.Forwarder), and closing the forwarder is the API server going away for it.
    api_server = urlsplit(example.control_plane.url)
    assert api_server.hostname
    assert api_server.port
    forwarder = await Forwarder(api_server.hostname, api_server.port).start()
    kubeconfig = json.loads(example.data_store_kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forwarder.port}"
    path = example.workdir / "kubeconfig-through-forwarder"
    path.write_text(json.dumps(kubeconfig))
    cut_off = Service(
        "data-store",
        {**example.data_store_env, "KUBECONFIG": str(path), "REVIEW_CACHE_SECONDS": "1", "REVIEW_TIMEOUT_SECONDS": "2"},
        example.workdir / "data-store-cut-off.log",
    )
    await asyncio.to_thread(cut_off.start)
    example.started.append(cut_off)
    try:
        seen = example.api_token.token
        unseen = token_bound_to(example.control_plane, example.api_pod, audience="data-store", seconds=3600)
        assert (await call(cut_off.url + "/", token=seen))[0] == 200

        await forwarder.close()
        await asyncio.sleep(1.1)  # past the verdict's TTL: no stale acceptance may stand in
        answers = [await call(cut_off.url + "/", token=token) for token in (seen, unseen) * 3]
        assert [status for status, _, _ in answers] == [503] * 6
        for _, body, headers in answers:
            assert body["reason"] == "review_unavailable"
            assert f"127.0.0.1:{forwarder.port}" not in body["message"], "the API server's address is not sent"
            assert "retry later" in body["message"]
            assert int(headers["Retry-After"]) >= 1
        async with aiohttp.ClientSession() as session, session.get(cut_off.url + "/healthz") as health:
            assert health.status == 200, "the data store itself is alive"
        assert f"127.0.0.1:{forwarder.port}" in cut_off.log, "it is logged for the operator instead"
        assert shows_none_of(cut_off.log, seen, unseen)
    finally:
        await forwarder.close()
        cut_off.stop()


async def test_8_a_burst_of_2000_requests_through_the_api_all_succeed_on_one_review_per_token_per_ttl(
    example: Example,
) -> None:
    await asyncio.sleep(CACHE_SECONDS + 0.2)  # let the api's token's verdict expire: the burst starts cold
    before = await asyncio.to_thread(settled_reviews, example.control_plane)
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(example.api.url + "/") as response:
                await response.read()
                return response.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(one() for _ in range(BURST)))
        elapsed = time.monotonic() - started
    reviews = await asyncio.to_thread(settled_reviews, example.control_plane) - before
    assert statuses.count(200) == BURST, {status: statuses.count(status) for status in set(statuses)}
    windows = int(elapsed // CACHE_SECONDS) + 1  # the api sends one token: one review per window at most
    assert 1 <= reviews <= windows, f"{reviews} TokenReviews for {BURST} requests in {elapsed:.1f} s ({windows} TTLs)"
