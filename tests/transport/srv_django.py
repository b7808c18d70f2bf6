"""A Django project in one module: kitobs.transport.django.Middleware via settings (gunicorn)."""

from __future__ import annotations

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["kitobs.transport.django.Middleware"],
    KITOBS={"kit": "tests.transport.srv_common.KIT"},
    INSTALLED_APPS=[],
    LOGGING_CONFIG=None,
)
django.setup()


def article(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"pk": pk})


def boom(request: HttpRequest) -> HttpResponse:
    raise ArithmeticError("kaput")


urlpatterns = [
    path("articles/<int:pk>/", article),
    path("boom/", boom),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

from tests.transport import srv_common  # noqa: E402

app = srv_common.with_metrics_wsgi(get_wsgi_application())
