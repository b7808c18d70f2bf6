"""``kitobs demo``: an example service built from kitobs' parts the way a user would build it.

The service (`kitobs.demo.service`) has four endpoints: ``sum`` (fast), ``concat``, ``slow`` and
``flaky`` (which now and then returns a business error or raises). They are wrapped in kitobs'
endpoint middleware and served over HTTP on one port, which also serves ``/metrics`` and
``/debug/vars``, and over gRPC on the next port when grpcio is installed. ``--load RATE`` makes
the demo call itself RATE times a second through kitobs' instrumented clients, so every signal
has data. It runs on embedded defaults with nothing else to start: logfmt logs on stderr,
Prometheus exposition and the expvar page on its own port, spans summarised in the log. Any
setting can be changed by configuration, e.g. ``KITOBS_METRICS_BACKEND=statsd``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from kitobs import config
from kitobs.errors import ConfigError
from kitobs.kit import Kit

if TYPE_CHECKING:
    from kitobs.demo.messaging import Relay

__all__ = ["DEMO_DEFAULTS", "run"]

#: The demo's embedded defaults; every configuration source overrides them.
DEMO_DEFAULTS: Mapping[str, Any] = {
    "service.name": "kitobs-demo",
    "metrics.backend": ("prometheus", "expvar"),
    "tracing.exporter": "log",
}


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    grpc_port: int | None = None,
    config_path: str | None = None,
    load: float = 0.0,
    duration: float = 0.0,
    env: Mapping[str, str] | None = None,
    nats_url: str | None = None,
    amqp_url: str | None = None,
) -> int:
    """run serves the demo until SIGINT or SIGTERM (or *duration* seconds) and returns 0.

    Raises:
        ConfigError: the configuration is invalid (the command prints it and exits 2).
    """
    if not 0 <= port <= 65535:
        raise ConfigError("the demo's port must be 0..65535", value=port)
    if grpc_port is not None and not -1 <= grpc_port <= 65535:
        raise ConfigError("the demo's gRPC port must be 0..65535, or -1 for none", value=grpc_port)
    settings = config.load(config_path, env=env, defaults=DEMO_DEFAULTS)

    from kitobs.demo.grpc import start_grpc
    from kitobs.demo.guards import signing_key
    from kitobs.demo.http import DemoServer
    from kitobs.demo.load import LoadGenerator

    kit = Kit.from_settings(settings)
    key = signing_key()
    relay = _relay(kit, nats_url, amqp_url) if nats_url else None
    try:
        server = DemoServer(kit, host, port, key, relay)
    except OSError as err:
        kit.close()
        print(f"kitobs demo: cannot listen on {host}:{port}: {err.strerror}", file=sys.stderr)
        return 1

    if grpc_port is None:
        grpc_port = port + 1 if 0 < port < 65535 else 0  # else any free port
    grpc_server = start_grpc(kit, host, grpc_port) if grpc_port >= 0 else None
    grpc_target = grpc_server.target if grpc_server is not None else None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    generator = (
        LoadGenerator(kit, server.url, load, grpc_target, key, relay=relay is not None)
        if load > 0
        else None
    )
    try:
        server.start()
        _banner(server.url, grpc_target, settings, load)
        if generator is not None:
            generator.start()
        deadline = time.monotonic() + duration if duration > 0 else math.inf
        # Wait in short steps: a signal delivered to another thread only runs its Python handler
        # once the main thread wakes up, and an untimed wait might never wake.
        while not stop.wait(0.2) and time.monotonic() < deadline:
            pass
    finally:
        if generator is not None:
            generator.stop()
        server.stop()
        if relay is not None:
            relay.close()
        if grpc_server is not None:
            grpc_server.close()
        kit.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("kitobs demo stopped", flush=True)
    return 0


def _relay(kit: Kit, url: str, amqp_url: str | None) -> Relay | None:
    # The NATS worker behind /relay; a demo that cannot reach NATS runs without it, and says so.
    from kitobs.demo.messaging import Relay

    try:
        relay = Relay(kit, url, amqp_url=amqp_url)
        relay.start()
    except (ConnectionError, ImportError) as err:
        kit.logger.log("level", "warn", "msg", "demo /relay disabled", "error", str(err))
        return None
    return relay


def _banner(url: str, grpc_target: str | None, settings: config.Settings, load: float) -> None:
    backends = ", ".join(settings.metrics.backend)
    lines = [
        f"kitobs demo ({settings.service.name}) listening on {url}  [pid {os.getpid()}]",
        f"  try:     {url}/sum?a=1&b=2   {url}/concat?a=x&b=y   {url}/slow?ms=120   {url}/flaky",
        f"  auth:    {url}/admin (Basic demo:demo)   {url}/whoami (bearer JWT, see the load)",
    ]
    if grpc_target is not None:
        lines.append(f"  gRPC:    {grpc_target}  (kitobs.Endpoints/sum, concat, slow, flaky)")
    if "prometheus" in settings.metrics.backend and not settings.metrics.prometheus.listen:
        lines.append(f"  metrics: {url}{settings.metrics.prometheus.path}")
    elif "prometheus" in settings.metrics.backend:
        lines.append(f"  metrics: http://{settings.metrics.prometheus.listen}/metrics")
    if "expvar" in settings.metrics.backend and not settings.metrics.expvar.listen:
        lines.append(f"  expvar:  {url}{settings.metrics.expvar.path}")
    lines.append(f"  metrics backends: {backends}; traces: {settings.tracing.exporter}")
    lines.append(f"  logs:    {settings.log.format} on {settings.log.output}")
    if load > 0:
        lines.append(f"  load:    {load:g} requests/s through kitobs' instrumented clients")
    lines.append("  stop with Ctrl-C (SIGINT) or SIGTERM")
    print("\n".join(lines), flush=True)
