"""Parts the transport test servers share: a Kit on a Prometheus provider and a Zipkin tracer.

The servers run in subprocesses (gunicorn, uvicorn) started by the tests; they read
``KITOBS_TESTAPP_ZIPKIN`` (the capture receiver's URL), ``KITOBS_TESTAPP_SERVICE`` and
``KITOBS_TESTAPP_DOWNSTREAM`` (a base URL the ``/chain`` routes call) from the environment.
``/metrics`` is served beside the instrumented app, so scrapes are not counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from kitobs.config import load
from kitobs.endpoint import RequestError
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import prometheus
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.zipkin import Exporter


def make_kit() -> Kit:
    """make_kit builds the server's Kit from the environment the test set."""
    service = os.environ.get("KITOBS_TESTAPP_SERVICE", "app")
    processor = BatchProcessor(
        Exporter(os.environ["KITOBS_TESTAPP_ZIPKIN"], service_name=service), flush_interval=0.05
    )
    return Kit(
        load(path=None, env={}, search=False),
        logger=nop(),
        metrics=prometheus.Provider(),
        tracer=Tracer(processor=processor),
    )


KIT = make_kit()


def configure_django(urlconf: str) -> None:
    """configure_django sets up Django with kitobs' middleware, *urlconf* as its URLconf module."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=urlconf,
        MIDDLEWARE=["kitobs.transport.django.Middleware"],
        KITOBS={"kit": "tests.transport.srv_common.KIT"},
        INSTALLED_APPS=[],
        LOGGING_CONFIG=None,
    )
    django.setup()


DOWNSTREAM = os.environ.get("KITOBS_TESTAPP_DOWNSTREAM", "")


class Refused(RequestError):
    """Refused is what the ``/refused`` routes raise: a rate limiter's kind of refusal."""

    status_code = 429
    grpc_status = "RESOURCE_EXHAUSTED"
    outcome = "limited"


def refuse(*_: object, **__: object) -> NoReturn:
    """refuse raises `Refused` with a ``Retry-After`` header, as every ``/refused`` route does."""
    raise Refused("slow down", headers={"Retry-After": "7"})


def leak(*_: object, **__: object) -> NoReturn:
    """leak raises an exception whose text must not reach the client (the ``/leaky`` routes)."""
    raise KeyError("postgres://app:hunter2@db/orders")


def with_metrics_wsgi(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """with_metrics_wsgi serves ``/metrics`` beside *app*."""
    metrics_app = KIT.metrics.wsgi_routes()["/metrics"]  # type: ignore[attr-defined]

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        return app(environ, start_response)

    return dispatch


def with_metrics_asgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """with_metrics_asgi serves ``/metrics`` beside *app*."""
    metrics_app = KIT.metrics.asgi_routes()["/metrics"]  # type: ignore[attr-defined]

    async def dispatch(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/metrics":
            await metrics_app(scope, receive, send)
            return
        await app(scope, receive, send)

    return dispatch
