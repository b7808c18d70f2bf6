"""The demo's load generator: calls the demo's own routes at a steady rate."""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request

from kitobs.kit import Kit

__all__ = ["LoadGenerator"]

_PATHS = (
    "/sum?a=1&b=2",
    "/concat?a=kit&b=obs",
    "/flaky",
    "/sum?a=1000000&b=1",
    "/slow?ms=30",
    "/flaky",
    "/no/such/route",
)


class LoadGenerator:
    """LoadGenerator sends *rate* requests per second to *url* from a background thread."""

    def __init__(self, kit: Kit, url: str, rate: float) -> None:
        self._kit = kit
        self._url = url
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kitobs-demo-load", daemon=True)

    def start(self) -> None:
        """start begins sending."""
        self._thread.start()

    def stop(self) -> None:
        """stop stops sending and waits for the request in flight."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_at = time.monotonic()
        for path in itertools.cycle(_PATHS):
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at += self._interval
            try:
                with urllib.request.urlopen(self._url + path, timeout=5) as response:
                    response.read()
            except urllib.error.HTTPError as err:
                err.close()
            except OSError as err:
                self._kit.logger.log("msg", "demo load request failed", "error", str(err))
