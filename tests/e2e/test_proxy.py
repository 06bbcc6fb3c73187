"""``token-projector proxy`` in front of a plain HTTP app, verifying tokens with the real kube-apiserver.

The proxy runs as the sidecar runs it (``python -m webhook proxy``), with the receiver's own
ServiceAccount token in a kubeconfig and RBAC from manifests/audience-token; callers send tokens the
kubelet would mint for Pods the webhook annotated. The app is a plain aiohttp server that tells what
it received. To take the API server away without stopping the shared control plane, the proxy reaches
it through a loopback forwarder the test closes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.e2e.conftest import ISSUER, ControlPlane, Registered
from tests.e2e.reviewer_support import Forwarder, ReviewerAccount, annotated_caller, reviewer_identity
from tests.e2e.tokens import claims_of, kubelet_token, request_token, token_bound_to
from tests.proxy.process import ProxyProcess, proxy_process
from tests.proxy.scenarios import DRAIN_SECONDS, MiB, drain_under_load, stream_100_mib_each_way
from tests.proxy.support import headers_of, plain_app, serving
from tests.tls_material import free_port

pytestmark = pytest.mark.e2e

AUDIENCE = "secret-store"


@pytest.fixture(scope="module")
def receiver(control_plane: ControlPlane) -> ReviewerAccount:
    return reviewer_identity(control_plane, bound=True)


@pytest.fixture
def caller_pod(registered: Registered, control_plane: ControlPlane) -> dict[str, Any]:
    """A caller Pod (ServiceAccount ``app``) annotated for the secret store, as the API server stored it."""
    return annotated_caller(control_plane, audience=AUDIENCE)


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    async with serving(plain_app()) as url:
        yield url


def arguments(kubeconfig: Path, upstream: str, allow: str, *more: str) -> tuple[str, ...]:
    return ("--upstream", upstream, "--audience", AUDIENCE, "--allow", allow, "--kubeconfig", str(kubeconfig), *more)


async def call(proxy: ProxyProcess, token: str | None, extra: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/echo", headers={**headers, **(extra or {})}) as response,
    ):
        body = await response.read()
    return response.status, response.headers, json.loads(body)


async def test_an_allowed_caller_reaches_the_app_as_its_pod_with_forged_identity_stripped(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    namespace, name = caller_pod["metadata"]["namespace"], caller_pod["metadata"]["name"]
    forged = {"X-Remote-User": "system:serviceaccount:kube-system:admin", "X-Remote-Group": "system:masters"}
    async with proxy_process(*arguments(receiver.kubeconfig, app_url, f"{namespace}/app")) as proxy:
        status, _, echoed = await call(proxy, kubelet_token(control_plane, caller_pod), forged)
    assert status == 200
    assert headers_of(echoed, "X-Remote-User") == [f"system:serviceaccount:{namespace}:app"]
    assert set(headers_of(echoed, "X-Remote-Group")) == {
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    }
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-name") == [name]
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-uid") == [
        caller_pod["metadata"]["uid"]
    ]
    assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fcredential-id")[0].startswith("JTI=")
    assert headers_of(echoed, "Authorization") == []
    assert "system:masters" not in json.dumps(echoed)


async def test_a_token_for_another_audience_and_another_account_are_refused_before_the_app(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    other_audience = token_bound_to(control_plane, caller_pod, audience="data-store", seconds=3600)
    async with proxy_process(*arguments(receiver.kubeconfig, app_url, "payments/*")) as proxy:
        status, headers, body = await call(proxy, other_audience)
        assert (status, body["reason"]) == (401, "wrong_audience")
        assert headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="invalid_token"'
        assert "'data-store'" in body["message"]
        status, headers, body = await call(proxy, kubelet_token(control_plane, caller_pod))
        assert (status, body["error"]) == (403, "insufficient_scope")
        assert headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="insufficient_scope"'
        status, _, body = await call(proxy, _jwt_with_exp_of_400_digits())
        assert status == 401, body


def _jwt_with_exp_of_400_digits() -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = b'{"aud":["secret-store"],"sub":"system:serviceaccount:x:app","exp":' + b"9" * 400 + b"}"
    header = part(b'{"alg":"RS256","kid":"k"}')
    return f"{header}.{part(claims)}.{part(b'x' * 64)}"


async def test_a_deleted_pods_token_is_refused_once_the_verdict_cache_has_expired(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    namespace, name = caller_pod["metadata"]["namespace"], caller_pod["metadata"]["name"]
    token = kubelet_token(control_plane, caller_pod)
    more = ("--verdict-cache-seconds", "2")
    async with proxy_process(*arguments(receiver.kubeconfig, app_url, f"{namespace}/app", *more)) as proxy:
        assert (await call(proxy, token))[0] == 200
        control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
        deleted_at = time.monotonic()
        while (answer := await call(proxy, token))[0] == 200:
            # our 2 s, then the API server's own 10 s success cache for the token
            assert time.monotonic() - deleted_at < 25, "a token bound to a deleted Pod must stop working"
            await asyncio.sleep(0.5)
    status, _, body = answer
    assert (status, body["reason"]) == (401, "expired_or_revoked")


async def test_with_the_api_server_unreachable_the_answer_is_503_and_with_the_app_down_502(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, tmp_path: Path
) -> None:
    api = urlsplit(control_plane.url)
    assert api.hostname
    assert api.port
    forwarder = await Forwarder(api.hostname, api.port).start()
    kubeconfig = json.loads(receiver.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forwarder.port}"
    through_forwarder = tmp_path / "kubeconfig.json"
    through_forwarder.write_text(json.dumps(kubeconfig))
    namespace = caller_pod["metadata"]["namespace"]
    app_down = f"http://127.0.0.1:{free_port()}"
    async with proxy_process(*arguments(through_forwarder, app_down, f"{namespace}/app")) as proxy:
        status, _, body = await call(proxy, kubelet_token(control_plane, caller_pod))
        assert (status, body["reason"]) == (502, "upstream_unreachable"), "verified, then the app is not there"
        await forwarder.close()
        status, headers, body = await call(proxy, kubelet_token(control_plane, caller_pod))
    assert status == 503
    assert body["error"] == "temporarily_unavailable"
    assert int(headers["Retry-After"]) >= 1
    assert f"127.0.0.1:{forwarder.port}" not in body["message"], "no client learns the API server's address"
    assert f"127.0.0.1:{forwarder.port}" in "".join(proxy.stderr), "the proxy's log names it"


async def test_streams_100_mib_each_way_in_flat_memory_and_echoes_a_websocket(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    token = kubelet_token(control_plane, caller_pod)
    allow = f"{caller_pod['metadata']['namespace']}/app"
    async with proxy_process(*arguments(receiver.kubeconfig, app_url, allow)) as proxy:
        grown = await stream_100_mib_each_way(proxy, token)
        assert grown < 16 * MiB, f"the proxy's peak memory grew {grown / MiB:.1f} MiB while streaming 2 x 100 MiB"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{proxy.url}/ws", headers=headers) as ws:
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=10) == "echo: hello"
            await ws.close()


async def test_sigterm_drains_under_load_with_the_real_api_server_and_loses_no_request(
    receiver: ReviewerAccount, caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    allow = f"{caller_pod['metadata']['namespace']}/app"
    more = ("--drain-seconds", str(DRAIN_SECONDS), "--shutdown-timeout-seconds", "5")
    async with proxy_process(*arguments(receiver.kubeconfig, app_url, allow, *more)) as proxy:
        await drain_under_load(proxy, kubelet_token(control_plane, caller_pod))


async def test_offline_mode_verifies_with_the_clusters_published_keys_as_tokenreview_mode_does(
    caller_pod: dict[str, Any], control_plane: ControlPlane, app_url: str
) -> None:
    """``--verification offline`` with a service account holding only Kubernetes' default discovery role."""
    namespace = caller_pod["metadata"]["namespace"]
    discovery_only = control_plane.kubeconfig(
        token=request_token(control_plane, namespace, "app", seconds=3600), name="proxy-discovery-only"
    )
    offline = ("--verification", "offline", "--issuer", ISSUER)
    token = kubelet_token(control_plane, caller_pod)
    async with proxy_process(*arguments(discovery_only, app_url, f"{namespace}/app", *offline)) as proxy:
        status, _, echoed = await call(proxy, token, {"X-Remote-User": "system:admin"})
        assert status == 200, echoed
        assert headers_of(echoed, "X-Remote-User") == [f"system:serviceaccount:{namespace}:app"]
        assert headers_of(echoed, "X-Remote-Extra-Authentication.kubernetes.io%2Fpod-uid") == [
            caller_pod["metadata"]["uid"]
        ]
        assert headers_of(echoed, "Authorization") == []
        other_audience = token_bound_to(control_plane, caller_pod, audience="data-store", seconds=3600)
        status, headers, body = await call(proxy, other_audience)
        assert (status, body["reason"]) == (401, "wrong_audience")
        assert headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="invalid_token"'
        header, _, signature = token.split(".")
        claims = claims_of(token)
        claims["kubernetes.io"]["namespace"] = "kube-system"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        status, _, body = await call(proxy, f"{header}.{forged}.{signature}")
        assert (status, body["reason"]) == (401, "invalid"), "the cluster's signature no longer matches"
        status, _, body = await call(proxy, _jwt_with_exp_of_400_digits())
        assert status == 401, body
    async with proxy_process(*arguments(discovery_only, app_url, "payments/*", *offline)) as proxy:
        status, headers, body = await call(proxy, token)
    assert (status, body["error"]) == (403, "insufficient_scope")
