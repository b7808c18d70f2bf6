"""The demo's load generator: calls the demo's own routes at a steady rate, through kitobs'
instrumented HTTP client, so client metrics and CLIENT spans appear too."""

from __future__ import annotations

import itertools
import threading
import time

import httpx

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


class LoadGenerator:
    """LoadGenerator sends *rate* requests per second to *url* from a background thread."""

    def __init__(self, kit: Kit, url: str, rate: float) -> None:
        self._kit = kit
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

    def _run(self) -> None:
        next_at = time.monotonic()
        for path in itertools.cycle(_PATHS):
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at = max(next_at + self._interval, time.monotonic() - 1.0)
            try:
                self._client.get(path)
            except httpx.HTTPError as err:
                self._kit.logger.log("msg", "demo load request failed", "error", repr(err))
