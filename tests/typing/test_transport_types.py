"""Type checks only (mypy): kitobs' tracer fits the transports; client endpoints are endpoints."""

from __future__ import annotations

from kitobs.endpoint import Endpoint
from kitobs.tracing import Tracer
from kitobs.transport import core, http
from kitobs.transport.httpclient import AsyncClientEndpoint, ClientEndpoint


def _tracer(tracer: Tracer) -> core.Tracer:
    return tracer


def _same_protocol(tracer: core.Tracer) -> http.Tracer:
    return tracer


def _sync_endpoint(endpoint: ClientEndpoint) -> Endpoint:
    return endpoint


def _async_endpoint(endpoint: AsyncClientEndpoint) -> Endpoint:
    return endpoint
