"""The article's api and data store, both from the example's image, as Pods on a real kubelet.

The api's token is the one the kubelet wrote into its Pod's projected volume (the webhook, from its own image,
added the volume at admission); the data store verifies it with a TokenReview, with its own Pod's in-cluster
credentials. This module's Pods are the session's first (``conftest.example``): ``test_rotation.py``, last in
the session, checks that the kubelet rotated the api's token and the calls went on.
"""

from __future__ import annotations

import pytest

from tests.node.conftest import Example

pytestmark = pytest.mark.e2e


def test_the_api_calls_the_data_store_with_the_token_the_kubelet_wrote(example: Example) -> None:
    status, body = example.call()

    assert status == 200, body
    assert body["username"] == f"system:serviceaccount:{example.api_namespace}:api"
    assert body["pod"] == example.api["metadata"]["name"], "the token is bound to the api's Pod"


def test_an_api_whose_token_is_for_another_audience_is_refused_by_the_data_store(example: Example) -> None:
    _, port = example.api_pod("api-for-secret-store", audience="secret-store", account="api")

    status, body = example.call(port)

    assert (status, body.get("reason")) == (401, "wrong_audience"), body


def test_an_api_running_as_another_service_account_is_refused_by_the_data_store(example: Example) -> None:
    _, port = example.api_pod("api-as-intruder", audience="data-store", account="intruder")

    status, body = example.call(port)

    assert (status, body.get("error")) == (403, "insufficient_scope"), body
