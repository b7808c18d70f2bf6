"""A Django project in one module: kitobs.transport.django.Middleware via settings (gunicorn)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from kitobs.endpoint import context
from tests.transport import srv_common

srv_common.configure_django(__name__)


def article(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"pk": pk})


def boom(request: HttpRequest) -> HttpResponse:
    raise ArithmeticError("kaput")


def request_context(request: HttpRequest) -> JsonResponse:
    # What the view sees of the request context kitobs' middleware filled.
    import time

    time.sleep(0.05)
    ctx = context.current()
    return JsonResponse({"who": ctx.metadata.get("X-Who"), "remaining": ctx.time_remaining()})


urlpatterns = [
    path("ctx/", request_context),
    path("articles/<int:pk>/", article),
    path("boom/", boom),
    path("refused/", srv_common.refuse),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

app = srv_common.with_metrics_wsgi(get_wsgi_application())
