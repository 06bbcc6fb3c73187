"""OfflineVerifier against a FakeIssuer on real TLS: signatures, claims, identity, key refresh, faults.

The fake holds the signing keys so these tests can mint what a real API server never would; the
same checks against the real kube-apiserver's discovery are in tests/e2e/test_audience_token_offline.py.
"""

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from audience_token.client import bearer_auth
from audience_token.errors import (
    EXPIRED_OR_REVOKED,
    INVALID,
    MALFORMED,
    NOT_A_SERVICE_ACCOUNT,
    WRONG_AUDIENCE,
    ConfigError,
    NotAllowed,
    ReviewUnavailable,
    Unauthenticated,
)
from audience_token.identity import Identity
from audience_token.jwks import DISCOVERY_ROLE
from audience_token.kube import Credentials
from audience_token.middleware import identity_of, protect
from audience_token.offline import OfflineSettings, OfflineVerifier
from audience_token.token_file import TokenFile
from tests.audience_token.conftest import Clock
from tests.audience_token.fake_api import outcome_of
from tests.audience_token.fake_issuer import ADMIN, ISSUER, FakeIssuer, claims, key_id, public_jwk, sign
from tests.audience_token.kubelet_volume import ProjectedVolume
from tests.tls_material import make_certs

MakeServer = Callable[..., Awaitable[TestServer]]


@dataclass
class Cluster:
    fake: FakeIssuer
    credentials: Credentials
    clock: Clock
    ca_file: Path

    @property
    def key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        return self.fake.keys[0]

    def verifier(self, allow: Any = "api/*", *, audience: str = "secret-store", **kw: Any) -> OfflineVerifier:
        return OfflineVerifier(audience, allow=allow, credentials=self.credentials, clock=self.clock, **kw)


@pytest.fixture
async def cluster(tmp_path: Path, aiohttp_server: MakeServer) -> Cluster:
    certs = make_certs(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    fake = FakeIssuer()
    server = await aiohttp_server(fake.app(), ssl=context, host="127.0.0.1")
    base = f"https://localhost:{server.port}"
    fake.base_url = base
    credentials = Credentials(server=base, source="test credentials", ca_file=str(certs / "ca.crt"), token=ADMIN)
    return Cluster(fake, credentials, Clock(100.0), certs / "ca.crt")


async def test_a_good_token_gives_the_identity_from_its_kubernetes_claims(cluster: Cluster) -> None:
    payload = claims()
    async with cluster.verifier() as verifier:
        identity = await verifier.verify(sign(cluster.key, payload))
    assert identity == Identity(
        namespace="api",
        service_account="api",
        uid="sa-uid-api",
        pod_name="api-7d9f",
        pod_uid="pod-uid-api-7d9f",
        node_name="node-1",
        node_uid="node-uid-node-1",
        credential_id=f"JTI={payload['jti']}",
        groups=("system:serviceaccounts", "system:serviceaccounts:api", "system:authenticated"),
        extra=identity.extra,
    )
    assert dict(identity.extra)["authentication.kubernetes.io/pod-name"] == ("api-7d9f",)
    assert identity.username == "system:serviceaccount:api:api"


async def test_rsa_keys_work_as_well_as_ecdsa(cluster: Cluster) -> None:
    cluster.fake.keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048)]
    async with cluster.verifier() as verifier:
        assert (await verifier.verify(sign(cluster.key, claims()))).service_account == "api"


async def test_a_token_for_another_audience_is_refused_naming_both(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated) as raised:
            await verifier.verify(sign(cluster.key, claims(audience="data-store")))
    assert raised.value.reason == WRONG_AUDIENCE
    assert "'data-store'" in raised.value.message
    assert "'secret-store'" in raised.value.message


async def test_the_audience_may_be_one_of_several(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        await verifier.verify(sign(cluster.key, claims(audience=["other", "secret-store"])))


async def test_an_account_not_in_allow_is_not_allowed_and_the_error_carries_its_identity(cluster: Cluster) -> None:
    async with cluster.verifier("api/api") as verifier:
        with pytest.raises(NotAllowed) as raised:
            await verifier.verify(sign(cluster.key, claims(namespace="data", account="store")))
    assert raised.value.identity.namespace == "data"
    assert "data/store" in raised.value.message


async def test_an_expired_token_is_refused_but_the_leeway_is_tolerated(cluster: Cluster) -> None:
    async with cluster.verifier(settings=OfflineSettings(leeway=30)) as verifier:
        just = claims(issued=time.time() - 3600 - 10)  # expired 10 s ago
        assert (await verifier.verify(sign(cluster.key, just))).namespace == "api"
        with pytest.raises(Unauthenticated) as raised:
            await verifier.verify(sign(cluster.key, claims(issued=time.time() - 3600 - 120)))
    assert raised.value.reason == EXPIRED_OR_REVOKED
    assert "re-read its token file" in raised.value.message


async def test_a_token_from_the_future_is_refused_saying_to_check_the_clocks(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match="clocks") as raised:
            await verifier.verify(sign(cluster.key, claims(issued=time.time() + 600)))
    assert raised.value.reason == INVALID


async def test_a_token_from_another_issuer_is_refused_naming_it(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match=r"elsewhere\.example") as raised:
            await verifier.verify(sign(cluster.key, claims(issuer="https://elsewhere.example")))
    assert raised.value.reason == INVALID


async def test_a_token_signed_by_another_key_with_a_published_kid_is_refused(cluster: Cluster) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match="signature does not verify") as raised:
            await verifier.verify(sign(forger, claims(), kid=key_id(cluster.key)))
    assert raised.value.reason == INVALID


async def test_a_token_without_a_kid_is_checked_against_every_key_of_its_algorithm(cluster: Cluster) -> None:
    cluster.fake.keys.append(ec.generate_private_key(ec.SECP256R1()))
    async with cluster.verifier() as verifier:
        assert (await verifier.verify(sign(cluster.fake.keys[1], claims(), kid=None))).namespace == "api"


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
async def test_unsigned_and_symmetric_tokens_are_refused_without_fetching_keys(
    cluster: Cluster, algorithm: str
) -> None:
    payload = claims()
    token = (
        jwt.encode(payload, "the-public-key-used-as-an-hmac-secret-by-a-forger", algorithm="HS256")
        if algorithm == "HS256"
        else jwt.encode(payload, "", algorithm="none") + "c2ln"
    )
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match="signed with") as raised:
            await verifier.verify(token)
        assert verifier.fetches == 0
    assert raised.value.reason == INVALID


async def test_a_subject_that_is_not_a_service_account_is_refused(cluster: Cluster) -> None:
    payload = {**claims(), "sub": "system:node:node-1"}
    async with cluster.verifier("*/*") as verifier:
        with pytest.raises(Unauthenticated) as raised:
            await verifier.verify(sign(cluster.key, payload))
    assert raised.value.reason == NOT_A_SERVICE_ACCOUNT


async def test_kubernetes_claims_that_disagree_with_the_subject_are_refused(cluster: Cluster) -> None:
    payload = {**claims(namespace="api"), "sub": "system:serviceaccount:kube-system:admin"}
    async with cluster.verifier("*/*") as verifier:
        with pytest.raises(Unauthenticated, match="do not name") as raised:
            await verifier.verify(sign(cluster.key, payload))
    assert raised.value.reason == INVALID


async def test_a_token_without_an_expiry_is_refused_naming_the_claim(cluster: Cluster) -> None:
    payload = claims()
    del payload["exp"]
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match="'exp'"):
            await verifier.verify(sign(cluster.key, payload))


async def test_a_legacy_secret_token_is_refused_as_having_no_audience_without_fetching_keys(cluster: Cluster) -> None:
    legacy = {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "api",
        "kubernetes.io/serviceaccount/secret.name": "api-token-x",
        "sub": "system:serviceaccount:api:api",
    }
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated, match="legacy") as raised:
            await verifier.verify(sign(cluster.key, legacy))
        assert verifier.fetches == 0
    assert raised.value.reason == WRONG_AUDIENCE


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b", "é.é.é", "x" * 20000, "a.b.c.d.e"])
async def test_garbage_is_malformed_and_costs_no_fetch(cluster: Cluster, garbage: str) -> None:
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated) as raised:
            await verifier.verify(garbage)
        assert verifier.fetches == 0
    assert raised.value.reason == MALFORMED


async def test_no_message_contains_the_token(cluster: Cluster) -> None:
    tokens = [
        sign(cluster.key, claims(audience="data-store")),
        sign(cluster.key, claims(issued=time.time() - 7200)),
        sign(ec.generate_private_key(ec.SECP256R1()), claims(), kid=key_id(cluster.key)),
        sign(cluster.key, claims(namespace="data")),
    ]
    async with cluster.verifier("api/api") as verifier:
        for token in tokens:
            with pytest.raises((Unauthenticated, NotAllowed)) as raised:
                await verifier.verify(token)
            for part in token.split("."):
                assert part not in str(raised.value)


async def test_keys_are_fetched_once_for_many_concurrent_first_calls(cluster: Cluster) -> None:
    token = sign(cluster.key, claims())
    async with cluster.verifier() as verifier:
        identities = await asyncio.gather(*(verifier.verify(token) for _ in range(50)))
        assert {i.namespace for i in identities} == {"api"}
        assert verifier.fetches == 1
    assert cluster.fake.requests == ["/.well-known/openid-configuration", "/openid/v1/jwks"]


async def test_a_new_signing_key_is_fetched_when_a_token_names_it(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        await verifier.verify(sign(cluster.key, claims()))
        rotated = ec.generate_private_key(ec.SECP256R1())
        cluster.fake.keys.append(rotated)
        cluster.clock.now += 31
        assert (await verifier.verify(sign(rotated, claims()))).namespace == "api"
        assert verifier.fetches == 2


async def test_unknown_key_ids_cause_at_most_one_fetch_per_interval(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        await verifier.verify(sign(cluster.key, claims()))
        cluster.clock.now += 31
        for n in range(20):
            with pytest.raises(Unauthenticated, match="does not publish") as raised:
                await verifier.verify(sign(cluster.key, claims(), kid=f"made-up-{n}"))
            assert raised.value.reason == INVALID
        assert verifier.fetches == 2, "one fetch for the first unknown kid, none for the next 19"
        cluster.clock.now += 31
        with pytest.raises(Unauthenticated):
            await verifier.verify(sign(cluster.key, claims(), kid="made-up-again"))
        assert verifier.fetches == 3


async def test_keys_are_refreshed_periodically_so_a_retired_key_stops_working(cluster: Cluster) -> None:
    retired = cluster.key
    async with cluster.verifier(settings=OfflineSettings(refresh_every=300)) as verifier:
        token = sign(retired, claims())
        await verifier.verify(token)
        cluster.fake.keys = [ec.generate_private_key(ec.SECP256R1())]
        cluster.clock.now += 299
        await verifier.verify(token)
        cluster.clock.now += 2
        # Due: answered from the current keys at once, while one refresh runs behind; then refused.
        await verifier.verify(token)

        async def until_refused() -> None:
            for _ in range(500):
                await asyncio.sleep(0.01)
                await verifier.verify(token)

        with pytest.raises(Unauthenticated, match="does not publish"):
            await until_refused()
        assert verifier.fetches == 2


async def test_a_failed_refresh_keeps_the_last_keys(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    token = sign(cluster.key, claims())
    async with cluster.verifier(settings=OfflineSettings(refresh_every=60)) as verifier:
        await verifier.verify(token)
        cluster.fake.fault = 500
        cluster.clock.now += 61
        for _ in range(500):  # the refresh runs behind the answers, which the last keys give
            assert (await verifier.verify(token)).namespace == "api"
            if "still using the last ones" in caplog.text:
                break
            await asyncio.sleep(0.01)
    assert "still using the last ones" in caplog.text


@pytest.mark.parametrize(("fault", "says"), [(500, "answered 500"), (403, DISCOVERY_ROLE), (401, DISCOVERY_ROLE)])
async def test_without_keys_verify_is_unavailable_saying_why(cluster: Cluster, fault: int, says: str) -> None:
    cluster.fake.fault = fault
    async with cluster.verifier() as verifier:
        with pytest.raises(ReviewUnavailable, match=says):
            await verifier.verify(sign(cluster.key, claims()))
        with pytest.raises(ReviewUnavailable, match=says):
            await verifier.verify(sign(cluster.key, claims()))
        assert verifier.fetches == 1, "the second call within the interval does not fetch again"


async def test_credentials_the_api_server_refuses_are_unavailable_naming_the_role(cluster: Cluster) -> None:
    credentials = Credentials(
        server=cluster.credentials.server, source="weak", ca_file=str(cluster.ca_file), token="someone-else"
    )
    verifier = OfflineVerifier("secret-store", allow="api/*", credentials=credentials)
    async with verifier:
        with pytest.raises(ReviewUnavailable, match=DISCOVERY_ROLE):
            await verifier.verify(sign(cluster.key, claims()))


async def test_a_discovery_document_that_is_not_json_is_unavailable(cluster: Cluster) -> None:
    cluster.fake.garbage = True
    async with cluster.verifier() as verifier:
        with pytest.raises(ReviewUnavailable, match="JSON"):
            await verifier.verify(sign(cluster.key, claims()))


async def test_an_unreachable_api_server_is_unavailable(cluster: Cluster) -> None:
    credentials = Credentials(server="https://127.0.0.1:9", source="nowhere", ca_file=str(cluster.ca_file), token=ADMIN)
    async with OfflineVerifier("secret-store", allow="api/*", credentials=credentials) as verifier:
        with pytest.raises(ReviewUnavailable, match="could not be reached"):
            await verifier.verify(sign(cluster.key, claims()))


async def test_a_configured_issuer_must_be_the_one_the_api_server_publishes(cluster: Cluster) -> None:
    async with cluster.verifier(issuer="https://other.example") as verifier:
        with pytest.raises(ReviewUnavailable, match="publishes the issuer"):
            await verifier.verify(sign(cluster.key, claims()))
    async with cluster.verifier(issuer=ISSUER + "/") as verifier:
        await verifier.verify(sign(cluster.key, claims()))


async def test_with_an_issuer_alone_the_keys_come_from_its_jwks_uri(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The issuer mode trusts the system's roots; the test's CA stands in for them.
    monkeypatch.setenv("SSL_CERT_FILE", str(cluster.ca_file))
    cluster.fake.issuer = cluster.credentials.server
    async with OfflineVerifier("secret-store", allow="api/*", issuer=cluster.credentials.server) as verifier:
        identity = await verifier.verify(sign(cluster.key, claims(issuer=cluster.credentials.server)))
    assert identity.namespace == "api"
    assert cluster.fake.requests == ["/.well-known/openid-configuration", "/openid/v1/jwks"]


def test_allow_is_required_and_checked_at_construction(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match=r"\*/\*"):
        cluster.verifier([])
    with pytest.raises(ConfigError, match="NAMESPACE/SERVICEACCOUNT"):
        cluster.verifier("api")


@pytest.mark.parametrize("audience", ["", "  ", "a\nb"])
def test_a_bad_audience_is_refused_at_construction(cluster: Cluster, audience: str) -> None:
    with pytest.raises(ConfigError, match="audience"):
        cluster.verifier(audience=audience)


def test_an_issuer_that_is_not_https_is_refused_at_construction(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match="https"):
        cluster.verifier(issuer="kubernetes/serviceaccount")


def test_without_the_offline_extra_construction_names_it(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ConfigError) as raised:
        cluster.verifier()
    assert "pip install 'audience-token[offline]'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_outside_a_pod_without_credentials_construction_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="kubeconfig"):
        OfflineVerifier("secret-store", allow="api/*")


def test_the_repr_says_where_the_keys_come_from_and_not_the_credentials(cluster: Cluster) -> None:
    text = repr(cluster.verifier())
    assert cluster.credentials.server in text
    assert ADMIN not in text


async def test_a_caller_with_bearer_auth_reaches_an_app_protected_by_the_offline_verifier(
    cluster: Cluster, aiohttp_server: MakeServer, tmp_path: Path
) -> None:
    """Both halves together: TokenFile + bearer_auth on one side, protect(app, OfflineVerifier) on the other."""

    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=str(identity_of(request)))

    app = web.Application()
    app.router.add_get("/", whoami)
    server = await aiohttp_server(protect(app, cluster.verifier("api/api")))
    good = ProjectedVolume.create(tmp_path / "api", {"token": sign(cluster.key, claims())})
    other = ProjectedVolume.create(tmp_path / "data", {"token": sign(cluster.key, claims(namespace="data"))})
    for volume, status, body in ((good, 200, "api/api (pod api/api-7d9f)"), (other, 403, "insufficient_scope")):
        async with (
            ClientSession(middlewares=(bearer_auth(TokenFile(volume.path("token"))),)) as session,
            session.get(server.make_url("/")) as response,
        ):
            assert response.status == status
            assert body in await response.text()


async def test_a_slow_key_refresh_does_not_stall_verification(cluster: Cluster) -> None:
    # Before the fix, once the keys were due every caller waited on the lock while one fetch ran.
    token = sign(cluster.key, claims())
    async with cluster.verifier(settings=OfflineSettings(refresh_every=60, timeout=60)) as verifier:
        await verifier.verify(token)
        cluster.fake.gate = asyncio.Event()  # the key endpoint now answers only when the test says so
        # No caller may wait for it: the 20 answers come while the fetch hangs (its timeout is 60 s).
        cluster.clock.now += 61
        identities = await asyncio.wait_for(asyncio.gather(*(verifier.verify(token) for _ in range(20))), 10)
        assert {i.service_account for i in identities} == {"api"}
        assert verifier.fetches == 2, "one refresh is running behind the answers"
        assert not cluster.fake.gate.is_set(), "and every caller was answered while it still waited"
        cluster.fake.gate.set()


async def test_a_token_naming_an_unknown_key_still_waits_for_the_fetch_that_may_bring_it(cluster: Cluster) -> None:
    async with cluster.verifier() as verifier:
        await verifier.verify(sign(cluster.key, claims()))
        new = ec.generate_private_key(ec.SECP256R1())
        cluster.fake.keys.append(new)
        cluster.clock.now += 31
        assert (await verifier.verify(sign(new, claims()))).service_account == "api"


async def test_any_unexpected_error_inside_offline_verification_becomes_unavailable(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(cluster.key, claims())
    async with cluster.verifier() as verifier:

        def broken(*_: object, **__: object) -> object:
            raise OverflowError(f"a defect that quotes {token}")

        monkeypatch.setattr(verifier, "_decode", broken)
        with pytest.raises(ReviewUnavailable, match="failed unexpectedly") as unavailable:
            await verifier.verify(token)
    assert token.split(".")[1] not in repr(unavailable.value)


async def test_an_unexpected_error_in_a_background_key_refresh_is_logged_by_its_class_only(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before the fix, _seen fetched the exception of the background task and dropped it: no trace at all.
    token = sign(cluster.key, claims())
    async with cluster.verifier(settings=OfflineSettings(refresh_every=60)) as verifier:
        await verifier.verify(token)
        keys = verifier._keys

        def broken(*_: object, **__: object) -> object:
            raise KeyError(f"a defect that quotes {token} and {public_jwk(cluster.key)}")

        monkeypatch.setattr(keys, "_parse_keys", broken)
        cluster.clock.now += 61
        with caplog.at_level(logging.DEBUG, logger="audience_token"):
            assert (await verifier.verify(token)).service_account == "api", "the last keys still answer"
            for _ in range(500):
                if keys._background is not None and keys._background.done():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # the done callback runs on the loop's next turn
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    said = errors[0].getMessage()
    assert "refreshing the service account keys in the background failed unexpectedly: KeyError" in said
    assert errors[0].exc_info is None
    for secret in (token.split(".")[1], token.split(".")[2], "quotes", public_jwk(cluster.key)["x"]):
        assert secret not in caplog.text


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [10**400, -(10**400), float("nan"), float("inf"), 1e308, "soon", [1]], ids=repr)
async def test_hostile_time_claims_in_a_signed_token_give_a_verdict(
    cluster: Cluster, claim: str, value: object
) -> None:
    payload = {**claims(), claim: value}
    async with cluster.verifier() as verifier:
        outcome = await outcome_of(verifier.verify(sign(cluster.key, payload)))
    assert not isinstance(outcome, ReviewUnavailable) or "unexpectedly" not in outcome.message


async def test_an_issuer_that_only_begins_the_configured_one_is_refused(cluster: Cluster) -> None:
    # CVE-2024-53861 (PyJWT 2.10.0): "https://kubernetes.default.svc" passed for "...svc.cluster.local".
    assert ISSUER == "https://kubernetes.default.svc.cluster.local"
    async with cluster.verifier() as verifier:
        with pytest.raises(Unauthenticated) as refused:
            await verifier.verify(sign(cluster.key, claims(issuer="https://kubernetes.default.svc")))
    assert refused.value.reason == INVALID


def test_an_api_server_audience_is_refused_at_construction_offline_too(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match="the Kubernetes API's own"):
        cluster.verifier(audience="https://kubernetes.default.svc.cluster.local")
    with pytest.raises(ConfigError, match="the cluster's issuer"):
        OfflineVerifier("https://issuer.example", allow="*/*", issuer="https://issuer.example/")


async def test_an_audience_that_is_the_clusters_issuer_is_refused_once_the_keys_say_so(cluster: Cluster) -> None:
    cluster.fake.issuer = "https://issuer.example"
    async with cluster.verifier(audience="https://issuer.example") as verifier:
        token = sign(cluster.key, claims(audience="https://issuer.example", issuer="https://issuer.example"))
        with pytest.raises(Unauthenticated, match="the cluster's service account issuer"):
            await verifier.verify(token)


def test_credentials_with_plain_http_off_loopback_cannot_reach_the_key_fetch() -> None:
    # Before the fix, OfflineVerifier(credentials=Credentials(server="http://...")) sent its own token in clear.
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        OfflineVerifier(
            "secret-store", allow="*/*", credentials=Credentials(server="http://10.0.0.1", source="t", token="t")
        )
