"""config: build the metrics provider that ``[metrics]`` names, e.g. ``backend = "statsd"``.

Changing backend is a configuration change only: the application calls
`provider_from_settings` once in ``main()`` and passes the provider on.

`BACKENDS` is the one table from a ``metrics.backend`` name to the module that builds it; its
names are the schema's choices (`kitobs.config.MetricsSettings`). A backend module is imported
only when the configuration names it, so the optional libraries stay optional.

What a backend provides (`Backend`), checked by mypy in ``tests/typing`` and by the conformance
suite in ``tests/metrics``. A new backend is:

1. one module ``kitobs/metrics/<name>.py`` with a ``Provider`` class matching
   `kitobs.metrics.Provider` (family-based backends mix in ``_declare.Declaring``, build a
   ``_declare.Core`` and call ``core.declare_self_metrics(self.declare)``, which declares the
   self-metrics every backend has), and a module-level ``from_settings(settings, context)``
   that reads its own ``[metrics.<name>]`` section and names keys through
   `kitobs.config.key_name`;
2. one line in `BACKENDS` and its name in the ``choices`` of ``metrics.backend`` (a test checks
   the two agree), plus a settings section if it has keys;
3. one line in ``HARNESSES`` of ``tests/metrics/harnesses.py``: a fresh provider and a reader of
   its own output, so every conformance test runs on it.

``docs/architecture.md`` ("Adding a metrics backend") works one through.

Example::

    >>> from kitobs.config import load
    >>> settings = load(env={"KITOBS_METRICS_BACKEND": "memory"}, search=False)
    >>> type(provider_from_settings(settings)).__module__
    'kitobs.metrics.memory'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from kitobs.config import ExpvarSettings, MetricsSettings, PrometheusSettings, env_name, key_name
from kitobs.errors import ConfigError
from kitobs.metrics import _workers
from kitobs.metrics._declare import Logger
from kitobs.metrics._http import parse_address

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ExemplarContext, Provider

__all__ = ["BACKENDS", "Backend", "BuildContext", "provider_from_settings"]

#: BACKENDS maps each ``metrics.backend`` name to the module that builds it (`Backend`).
#: ``prometheus`` builds a `kitobs.metrics.multiprocess` provider when workers share a directory.
BACKENDS: Mapping[str, str] = {
    "prometheus": "kitobs.metrics.prometheus",
    "statsd": "kitobs.metrics.statsd",
    "expvar": "kitobs.metrics.expvar",
    "otel": "kitobs.metrics.otel",
    "pushgateway": "kitobs.metrics.pushgateway",
    "memory": "kitobs.metrics.memory",
    "discard": "kitobs.metrics.discard",
}


@dataclass(frozen=True, slots=True)
class BuildContext:
    """BuildContext is what a backend gets besides the settings, e.g. ``context.logger``.

    Args:
        logger: where the cardinality guard and the backend warn.
        exemplar_context: (trace_id, span_id) of the current sampled span, for Prometheus.
        meter_provider: an OpenTelemetry MeterProvider for the ``otel`` backend.
        shared_directory: the directory the workers of this server share, or "" in a process
            on its own (found once for every backend, see ``[metrics] multiprocess``).
    """

    logger: Logger | None = None
    exemplar_context: ExemplarContext | None = None
    meter_provider: Any = None
    shared_directory: str = ""


class Backend(Protocol):
    """Backend is what a metrics backend module provides, e.g. `kitobs.metrics.statsd`."""

    def from_settings(self, settings: Settings, context: BuildContext) -> Provider:
        """from_settings builds the backend's provider from its settings section.

        Raises:
            ConfigError: a setting the loader cannot check; the message names the key.
        """
        ...


def provider_from_settings(
    settings: Settings,
    *,
    logger: Logger | None = None,
    exemplar_context: ExemplarContext | None = None,
    meter_provider: Any = None,
) -> Provider:
    """provider_from_settings builds one backend, or a `kitobs.metrics.multi` fan-out.

    Args:
        settings: the loaded configuration (`kitobs.config.load`).
        logger: where the cardinality guard and backends warn.
        exemplar_context: (trace_id, span_id) of the current sampled span, for Prometheus.
        meter_provider: an OpenTelemetry MeterProvider for the ``otel`` backend.

    Raises:
        ConfigError: a setting the loader cannot check, e.g. a listen address that is not
            ``host:port``, or two servers on one address; the message names the key.
    """
    m = settings.metrics
    names = list(dict.fromkeys(m.backend))  # keep order, drop repeats
    if len(names) > 1 and "discard" in names:
        names.remove("discard")  # discarding next to a real backend adds nothing
    if not names:
        raise ConfigError("no backend named", key=_BACKEND_KEY, allowed="one or more")
    _check_servers(settings, names)
    context = BuildContext(
        logger=logger,
        exemplar_context=exemplar_context,
        meter_provider=meter_provider,
        shared_directory=_shared_directory(settings, names, logger),
    )
    backends = [_backend(name) for name in names]
    members: list[Provider] = []
    try:
        for backend in backends:
            members.append(backend.from_settings(settings, context))
    except BaseException:
        for built in members:
            built.close()
        raise
    if len(members) == 1:
        return members[0]
    from kitobs.metrics import multi

    return multi.Provider(*members, max_label_sets=m.max_label_sets, logger=logger)


_BACKEND_KEY = key_name(MetricsSettings, "backend")


def _backend(name: str) -> Backend:
    """The module of backend *name*, imported now: a backend's libraries load only when chosen.

    Raises:
        ConfigError: *name* is not in `BACKENDS`, or its optional library is not installed.
    """
    module = BACKENDS.get(name)
    if module is None:  # the loader checks the names; this guards a hand-built Settings
        raise ConfigError(
            "is not a known backend", key=_BACKEND_KEY, value=name, allowed=tuple(BACKENDS)
        )
    try:
        return cast("Backend", importlib.import_module(module))
    except ImportError as err:
        raise ConfigError(
            f"the {name} backend needs the kitobs[{name}] extra ({err})",
            key=_BACKEND_KEY,
            value=name,
            allowed=f"pip install 'kitobs[{name}]'",
        ) from None


def _check_servers(settings: Settings, names: list[str]) -> None:
    m = settings.metrics
    # The backends that serve a page: each section has listen and path keys.
    pages: dict[str, PrometheusSettings | ExpvarSettings] = {
        "prometheus": m.prometheus,
        "expvar": m.expvar,
    }
    seen: dict[tuple[str, int], str] = {}
    for name, section in pages.items():
        if name in names and section.listen:
            key = key_name(type(section), "listen")
            addr = parse_address(section.listen, key=key, allow_public=m.allow_public_listen)
            if addr in seen and addr[1] != 0:
                raise ConfigError(
                    f"the {seen[addr]} and {name} servers cannot share one address",
                    key=key,
                    value=section.listen,
                )
            seen[addr] = name
    for name, section in pages.items():
        if name in names and not section.path.startswith("/"):
            raise ConfigError(
                "must start with /", key=key_name(type(section), "path"), value=section.path
            )
    if {"prometheus", "expvar"} <= set(names) and m.prometheus.path == m.expvar.path:
        raise ConfigError(
            "the Prometheus and expvar pages cannot share one path",
            key=key_name(type(m.expvar), "path"),
            value=m.expvar.path,
        )


_MULTIPROCESS_DIR = key_name(PrometheusSettings, "multiprocess_dir")


def _shared_directory(settings: Settings, names: list[str], logger: Logger | None) -> str:
    """The directory the workers of this server share, or "" in a process on its own."""
    m = settings.metrics
    if m.prometheus.multiprocess_dir:
        return m.prometheus.multiprocess_dir
    if m.multiprocess == "off" or not {"prometheus", "expvar"} & set(names):
        return ""
    found = _workers.detect()
    if isinstance(found, _workers.Detected):
        return str(_workers.shared_directory(found))
    if isinstance(found, _workers.Unsure) and logger is not None:
        logger.log(
            "level",
            "warn",
            "msg",
            f"metrics may show one worker's numbers: set {_MULTIPROCESS_DIR}"
            f" ({env_name(tuple(_MULTIPROCESS_DIR.split('.')))}) to a directory the workers share",
            "reason",
            found.reason,
        )
    return ""
