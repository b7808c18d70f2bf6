"""A Django project under ASGI (uvicorn): the settings-configured middleware in async mode.

Each view answers with the trace ids current inside it and the thread it ran on, and with the
thread on which the middleware started the request (recorded by a wrapper around
`ServerInstruments.start`, which only observes), so the test can see that the middleware's span is
current in the view and that the middleware itself ran on the event loop.
"""

from __future__ import annotations

import asyncio
import threading

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from tests.transport import srv_common

srv_common.configure_django(__name__)

from kitobs.tracing import current_ids  # noqa: E402
from kitobs.transport.http import ServerInstruments  # noqa: E402

_started_on: dict[str, str] = {}  # request path -> thread the middleware started it on
_start = ServerInstruments.start


def _observed_start(self: ServerInstruments, *args: object, **kwargs: object) -> object:
    path = args[3] if len(args) > 3 else kwargs.get("path", "")
    _started_on[str(path)] = threading.current_thread().name
    return _start(self, *args, **kwargs)  # type: ignore[arg-type]


ServerInstruments.start = _observed_start  # type: ignore[assignment, method-assign]


def _seen(request: HttpRequest, **extra: object) -> JsonResponse:
    ids = current_ids()
    return JsonResponse(
        {
            "ids": list(ids) if ids else None,
            "thread": threading.current_thread().name,
            "middleware_thread": _started_on.get(request.path),
            **extra,
        }
    )


async def article(request: HttpRequest, pk: int) -> JsonResponse:
    await asyncio.sleep(0)
    return _seen(request, pk=pk)


def legacy(request: HttpRequest) -> JsonResponse:  # a sync view under ASGI: Django adapts it
    return _seen(request)


async def boom(request: HttpRequest) -> HttpResponse:
    raise ArithmeticError("kaput")


urlpatterns = [
    path("articles/<int:pk>/", article),
    path("legacy/", legacy),
    path("boom/", boom),
    path("refused/", srv_common.refuse),
]

from django.core.asgi import get_asgi_application  # noqa: E402

app = srv_common.with_metrics_asgi(get_asgi_application())
