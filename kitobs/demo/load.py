"""The demo's load generator: calls the demo's own routes at a steady rate, through kitobs'
instrumented HTTP client and, when the demo serves gRPC, its instrumented gRPC client, so client
metrics and CLIENT spans appear too."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Any

import httpx

from kitobs.demo.service import IntRequest, TextRequest
from kitobs.kit import Kit
from kitobs.transport.httpclient import HTTPXTransport

__all__ = ["LoadGenerator"]

_PATHS = (
    "/sum?a=1&b=2",
    "/concat?a=kit&b=obs",
    "/flaky",
    "/sum?a=1000000&b=1",
    "/slow?ms=30",
    "/flaky",
    "/sum?a=x",
    "/no/such/route",
)
_GRPC_CALLS: tuple[tuple[str, Any], ...] = (
    ("sum", IntRequest(2, 3)),
    ("concat", TextRequest("g", "rpc")),
    ("flaky", None),
    ("sum", IntRequest(1_000_000, 1)),
    ("nope", None),
)


class LoadGenerator:
    """LoadGenerator sends *rate* requests per second to *url* from a background thread."""

    def __init__(self, kit: Kit, url: str, rate: float, grpc_target: str | None = None) -> None:
        self._kit = kit
        self._grpc: Any = None
        if grpc_target is not None:
            from kitobs.demo.grpc import grpc_client

            self._grpc = grpc_client(kit, grpc_target)
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=url,
            timeout=5.0,
            transport=HTTPXTransport(httpx.HTTPTransport(), kit.metrics, tracer=kit.tracer),
        )
        self._thread = threading.Thread(target=self._run, name="kitobs-demo-load", daemon=True)

    def start(self) -> None:
        """start begins sending."""
        self._thread.start()

    def stop(self) -> None:
        """stop stops sending, waits for the request in flight and closes the client."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._client.close()
        if self._grpc is not None:
            self._grpc.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        grpc_calls = itertools.cycle(_GRPC_CALLS)
        for n, path in enumerate(itertools.cycle(_PATHS)):
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at = max(next_at + self._interval, time.monotonic() - 1.0)
            if self._grpc is not None and n % 3 == 2:
                self._call_grpc(*next(grpc_calls))
                continue
            try:
                self._client.get(path)
            except httpx.HTTPError as err:
                self._kit.logger.log("msg", "demo load request failed", "error", repr(err))

    def _call_grpc(self, method: str, request: Any) -> None:
        import grpc

        # Errors are part of the demo's traffic; the interceptor has recorded them.
        with contextlib.suppress(grpc.RpcError):
            self._grpc.call(method, request)
