"""pushgateway: a short-lived job pushes its metrics to a Prometheus Pushgateway.

Metrics are kept like `kitobs.metrics.prometheus` keeps them and pushed (HTTP PUT, replacing the
group) to ``/metrics/job/<job>/instance/<instance>``: on demand with `Provider.push`, on
`Provider.close`, and at interpreter exit or SIGTERM when ``push_on_exit`` is on (within the exit
budget ``kit.exit_timeout``, see docs/shutdown.md; a push cut short there is reported on stderr).
A failed push never raises: it returns False, is counted in
``kitobs_telemetry_dropped_total{signal="metrics",reason="push_failed"}`` and logged.

Example::

    >>> provider = Provider("127.0.0.1:9091", job="nightly", push_on_exit=False)
    >>> provider.counter("rows", help="Rows copied.").add(10)
    >>> provider.url
    'http://127.0.0.1:9091/metrics/job/nightly/instance/...'
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from kitobs import _exit
from kitobs.config import PushgatewaySettings, key_name
from kitobs.errors import ConfigError
from kitobs.metrics import prometheus
from kitobs.metrics._declare import Logger, NopLogger

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ASGIApp, GaugeCallback, InstrumentT, MetricSpec, WSGIApp
    from kitobs.metrics import Counter as CounterProtocol
    from kitobs.metrics import Gauge as GaugeProtocol
    from kitobs.metrics import Histogram as HistogramProtocol
    from kitobs.metrics.config import BuildContext

__all__ = ["Provider", "from_settings", "Counter", "Gauge", "Histogram", "grouping_path"]

#: Counter is a pushgateway counter (kept like a prometheus one).
Counter = prometheus.Counter
#: Gauge is a pushgateway gauge.
Gauge = prometheus.Gauge
#: Histogram is a pushgateway histogram.
Histogram = prometheus.Histogram


def grouping_path(job: str, grouping: Mapping[str, str]) -> str:
    """grouping_path builds the group's URL path, e.g. ``/metrics/job/nightly/instance/h1``.

    Values with ``/`` (or empty ones) use the Pushgateway's base64 form.
    """
    parts = ["/metrics"]
    for key, value in (("job", job), *grouping.items()):
        if "/" in value or not value:
            b64 = base64.urlsafe_b64encode(value.encode()).decode() or "="
            parts.append(f"{key}@base64/{b64}")
        else:
            parts.append(f"{key}/{urllib.parse.quote(value, safe='')}")
    return "/".join(parts)


class Provider:
    """Provider keeps metrics and pushes them, e.g. ``Provider("127.0.0.1:9091", job="etl")``.

    Args:
        address: ``host:port`` or URL of the Pushgateway.
        job: the ``job`` grouping key (required, non-empty).
        instance: the ``instance`` grouping key; the host name by default.
        timeout: seconds one push may take.
        push_on_exit: push once more at interpreter exit (and on `close`).
        common_labels, max_label_sets, logger, process_metrics: as `prometheus.Provider`.
    """

    def __init__(
        self,
        address: str,
        *,
        job: str,
        instance: str = "",
        timeout: float = 5.0,
        push_on_exit: bool = True,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        process_metrics: bool = False,
    ) -> None:
        if not job:
            raise ConfigError(
                "the job grouping key is empty", key=key_name(PushgatewaySettings, "job")
            )
        base = address if "://" in address else f"http://{address}"
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(
                "is not host:port or an http(s) URL",
                key=key_name(PushgatewaySettings, "address"),
                value=address,
            )
        self.job = job
        self.instance = instance or socket.gethostname()
        self.url = base.rstrip("/") + grouping_path(job, {"instance": self.instance})
        self._timeout = timeout
        self._logger: Logger = logger if logger is not None else NopLogger()
        self._prom = prometheus.Provider(
            common_labels=common_labels,
            max_label_sets=max_label_sets,
            logger=logger,
            process_metrics=process_metrics,
        )
        self._failed = self._prom.dropped("metrics", "push_failed")
        self._lock = threading.Lock()
        self._closed = False
        self._push_on_exit = push_on_exit
        if push_on_exit:
            _exit.at_exit(self)

    def counter(
        self, name: str, *, help: str, unit: str = "", labels: Sequence[str] = ()
    ) -> CounterProtocol:
        """counter declares a counter, e.g. ``counter("rows", help="Rows copied.")``."""
        return self._prom.counter(name, help=help, unit=unit, labels=labels)

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> GaugeProtocol:
        """gauge declares a gauge; a *callback* is read at each push."""
        return self._prom.gauge(name, help=help, unit=unit, labels=labels, callback=callback)

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> HistogramProtocol:
        """histogram declares a histogram, e.g. ``histogram("batch_duration", unit="seconds")``."""
        return self._prom.histogram(name, help=help, unit=unit, labels=labels, buckets=buckets)

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric."""
        return self._prom.declare(spec)

    def dropped(self, signal: str, reason: str) -> CounterProtocol:
        """dropped gives ``kitobs_telemetry_dropped_total{signal,reason}``'s bound child."""
        return self._prom.dropped(signal, reason)

    def payload(self) -> bytes:
        """payload is what a push sends now: the text 0.0.4 exposition."""
        return self._prom.exposition()

    def push(self) -> bool:
        """push sends every metric now, replacing the group; False (and counted) on failure."""
        return self._push(self._timeout)

    def _push(self, timeout: float) -> bool:
        body = self.payload()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PUT",
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
        try:
            with self._lock, urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
            return True
        except (OSError, urllib.error.URLError, ValueError) as err:
            self._failed.add(1.0)
            # A broken logger must not turn a failed push into a raise.
            with contextlib.suppress(Exception):
                self._logger.log(
                    "level", "warn", "msg", "push failed", "url", self.url, "err", str(err)
                )
            return False

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes is empty: this backend serves no page."""
        return {}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes is empty: this backend serves no page."""
        return {}

    def close(self) -> None:
        """close pushes once more (with ``push_on_exit``) and stops the exit hook; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._push_on_exit:
            self.push()
        self._prom.close()

    def _flush_at_exit(self, deadline: float) -> str:
        if self._closed or not self._push_on_exit:
            return ""
        self._closed = True
        timeout = min(self._timeout, deadline - time.monotonic())
        done: list[bool] = []
        if timeout > 0:
            # On its own thread: a server that trickles bytes cannot stretch the socket timeout.
            task = _exit.in_background(lambda: done.append(self._push(timeout)))
            task.join(max(0.0, deadline - time.monotonic()))
        return "" if done == [True] else f"the last push to {self.url}"


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds the provider ``[metrics.pushgateway]`` describes (job: the service)."""
    m, g = settings.metrics, settings.metrics.pushgateway
    return Provider(
        g.address,
        job=g.job or settings.service.name,
        instance=g.instance,
        timeout=g.timeout,
        push_on_exit=g.push_on_exit,
        common_labels=settings.service.labels,
        max_label_sets=m.max_label_sets,
        logger=context.logger,
        process_metrics=m.process_metrics,
    )
