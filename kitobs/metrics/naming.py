"""kitobs.metrics.naming: what a metric may be called, and how a declared name becomes each
backend's name.

A metric is declared with a snake_case base name (no unit suffix, no ``_total``), a unit and a
kind. Then:

- Prometheus: base + ``_<unit>`` + ``_total`` for counters, e.g. `prometheus_name`.
- statsd: ``_`` turned into ``.`` after the prefix, e.g. `statsd_name`; durations as timers in ms.
- expvar page: the Prometheus name, labels as a nested object.
- OpenTelemetry: the dotted name; for kitobs' own metrics the semantic-convention name and
  attribute names of `kitobs.contract` (`kitobs.contract.otel_name`).

Every backend checks names here at declaration time, so a bad name fails the same way everywhere.

Example::

    >>> prometheus_name("jobs", "", "counter")
    'jobs_total'
    >>> prometheus_name("job_duration", "seconds", "histogram")
    'job_duration_seconds'
    >>> statsd_name("http_server_request_duration", "shop")
    'shop.http.server.request.duration'
"""

from __future__ import annotations

import re
from typing import Literal

from kitobs.errors import ConfigError

__all__ = [
    "MetricKind",
    "UNITS",
    "check_base_name",
    "check_label_name",
    "prometheus_name",
    "statsd_name",
]

#: MetricKind is the kind of a declared metric.
MetricKind = Literal["counter", "gauge", "histogram"]

#: Units a metric may declare; the empty string is dimensionless (no suffix).
UNITS: tuple[str, ...] = ("", "seconds", "bytes", "ratio")

_BASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")
_SUFFIXES = ("_total", "_seconds", "_bytes", "_ratio", "_count", "_sum", "_bucket", "_created")


def check_base_name(name: str, unit: str, kind: MetricKind) -> None:
    """check_base_name raises `ConfigError` unless *name* is a valid base name, e.g. ``jobs``.

    A base name is snake_case ASCII, without a unit suffix or ``_total``: kitobs adds those.
    """
    if unit not in UNITS:
        raise ConfigError(f"metric {name!r}: unknown unit", value=unit, allowed=UNITS)
    if not _BASE.match(name):
        raise ConfigError(
            f"metric name {name!r} is not snake_case",
            allowed="lowercase letters, digits and single underscores, starting with a letter",
        )
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            fixed = name[: -len(suffix)]
            raise ConfigError(
                f"metric name {name!r} already ends in {suffix!r}; kitobs adds unit and "
                f"_total suffixes itself",
                allowed=f"declare {fixed!r} (with unit={suffix[1:]!r} if it is a unit)",
            )
    if kind not in ("counter", "gauge", "histogram"):
        raise ConfigError(
            f"metric {name!r}: unknown kind", value=kind, allowed=("counter", "gauge", "histogram")
        )


def check_label_name(metric: str, label: str) -> None:
    """check_label_name raises `ConfigError` unless *label* is a snake_case label name."""
    if not _LABEL.match(label) or label.startswith("__") or label == "le":
        raise ConfigError(
            f"metric {metric!r}: label name {label!r} is not allowed",
            allowed="snake_case names, not starting with __, not 'le'",
        )


def prometheus_name(base: str, unit: str, kind: MetricKind) -> str:
    """prometheus_name gives the Prometheus name, e.g. ``jobs`` counter → ``jobs_total``."""
    name = f"{base}_{unit}" if unit else base
    return f"{name}_total" if kind == "counter" else name


def statsd_name(base: str, prefix: str = "") -> str:
    """statsd_name turns a base name into statsd's, e.g. ``http_requests`` → ``http.requests``."""
    dotted = base.replace("_", ".")
    return f"{prefix}.{dotted}" if prefix else dotted
