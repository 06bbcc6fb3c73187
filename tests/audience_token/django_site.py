"""A Django site behind audience_token.django, for gunicorn (WSGI) and uvicorn (ASGI) in a child process.

Settings, URLs and views in one module (``DJANGO_SETTINGS_MODULE=tests.audience_token.django_site``); the
API server and audience come from ``AUDIENCE_TOKEN_TEST_*`` (see ``receiver_apps.environment``).
"""

from __future__ import annotations

import os
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from audience_token.kube import Credentials
from tests.audience_token.receiver_apps import OPEN_PATH, RULES

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = __name__
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["audience_token.django.AudienceTokenMiddleware"]


def _audience_token() -> dict[str, Any]:
    env = os.environ
    config: dict[str, Any] = {
        "audience": env.get("AUDIENCE_TOKEN_TEST_AUDIENCE", "secret-store"),
        "allow": env.get("AUDIENCE_TOKEN_TEST_ALLOW", "api/*").split(","),
        "open_paths": [OPEN_PATH],
        "routes": RULES,
        "timeout": 5,
    }
    if env.get("AUDIENCE_TOKEN_TEST_KUBECONFIG"):
        config["kubeconfig"] = env["AUDIENCE_TOKEN_TEST_KUBECONFIG"]
    elif env.get("AUDIENCE_TOKEN_TEST_SERVER"):
        config["credentials"] = Credentials(
            server=env["AUDIENCE_TOKEN_TEST_SERVER"],
            source="FakeApiServer",
            ca_file=env["AUDIENCE_TOKEN_TEST_CA"],
            token=env["AUDIENCE_TOKEN_TEST_OWN_TOKEN"],
        )
    return config


AUDIENCE_TOKEN = _audience_token()


def whoami(request: HttpRequest) -> JsonResponse:
    caller = request.caller  # type: ignore[attr-defined]
    return JsonResponse({"caller": str(caller), "pod": caller.pod_name, "view": "sync"})


async def whoami_async(request: HttpRequest) -> JsonResponse:
    caller = request.caller  # type: ignore[attr-defined]
    return JsonResponse({"caller": str(caller), "pod": caller.pod_name, "view": "async"})


def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"caller": str(getattr(request, "caller", None))})


def delete(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"deleted": name})


urlpatterns = [
    path("", whoami),
    path("async", whoami_async),
    path(OPEN_PATH.lstrip("/"), ready),
    path("secrets/<str:name>", delete),
    path("admin", ready),
    path("admin/<str:name>", delete),
]


def wsgi() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def asgi() -> Any:
    from django.core.asgi import get_asgi_application

    return get_asgi_application()
