"""A Django project in one module: kitobs.transport.django.Middleware via settings (gunicorn)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from tests.transport import srv_common

srv_common.configure_django(__name__)


def article(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"pk": pk})


def boom(request: HttpRequest) -> HttpResponse:
    raise ArithmeticError("kaput")


urlpatterns = [
    path("articles/<int:pk>/", article),
    path("boom/", boom),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

app = srv_common.with_metrics_wsgi(get_wsgi_application())
