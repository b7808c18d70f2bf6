"""The Django recipe: exposition_urls in urlpatterns, the middleware first (gunicorn, uvicorn).

``app`` is the WSGI application, ``asgi_app`` the ASGI one, of the same project.
"""

from __future__ import annotations

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from kitobs.transport import django as kitobs_django

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["kitobs.transport.django.Middleware"],
    KITOBS={"kit": "tests.transport.srv_recipe_common.KIT"},
    INSTALLED_APPS=[],
    LOGGING_CONFIG=None,
)
django.setup()


def user(request: HttpRequest, user_id: int) -> JsonResponse:
    return JsonResponse({"id": user_id})


def boom(request: HttpRequest) -> HttpResponse:
    raise KeyError("kaput")


urlpatterns = [
    *kitobs_django.exposition_urls(),
    path("users/<int:user_id>", user),
    path("boom", boom),
]

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

app = get_wsgi_application()
asgi_app = get_asgi_application()
