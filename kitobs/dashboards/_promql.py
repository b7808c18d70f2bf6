"""PromQL built from the metric contract: a renamed metric or label breaks the build, not a panel.

Every metric name comes from a `kitobs.metrics.MetricSpec`; every label name goes through `label`,
which raises `kitobs.errors.ConfigError` when the spec does not declare it. Series are scoped to
the dashboard's ``$job`` and ``$instance`` variables, the scrape target's labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kitobs.errors import ConfigError

__all__ = [
    "Spec",
    "RATE_WINDOW",
    "SCOPE",
    "label",
    "eq",
    "ne",
    "regex",
    "present",
    "series",
    "rate",
    "sum_by",
    "max_by",
    "request_rate",
    "quantile",
    "error_ratio",
]

#: Window of every rate(): Grafana's at-least-four-scrapes interval.
RATE_WINDOW = "$__rate_interval"
#: Matchers every query carries: the scrape target chosen in the dashboard's variables.
SCOPE: tuple[str, ...] = ('job=~"$job"', 'instance=~"$instance"')


class Spec(Protocol):
    """Spec is what a query needs of a `kitobs.metrics.MetricSpec`, e.g. its Prometheus name."""

    @property
    def kind(self) -> str:
        """The metric kind, e.g. ``"histogram"``."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The declared label names, e.g. ``("endpoint", "outcome")``."""

    @property
    def prometheus_name(self) -> str:
        """The Prometheus name, e.g. ``kitobs_endpoint_duration_seconds``."""


_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("",), "gauge": ("",)}


def label(spec: Spec, name: str) -> str:
    """label returns *name* if *spec* declares it, e.g. ``label(HTTP_SERVER_..., "http_route")``.

    Raises:
        ConfigError: *spec* has no such label, so a query on it would silently match nothing.
    """
    if name not in spec.labels:
        raise ConfigError(
            f"metric {spec.prometheus_name!r} has no label {name!r}", allowed=spec.labels
        )
    return name


def eq(spec: Spec, name: str, value: str) -> str:
    """eq gives an equality matcher on a declared label, e.g. ``outcome="success"``."""
    return f'{label(spec, name)}="{value}"'


def ne(spec: Spec, name: str, value: str) -> str:
    """ne gives an inequality matcher on a declared label, e.g. ``outcome!="success"``."""
    return f'{label(spec, name)}!="{value}"'


def regex(spec: Spec, name: str, pattern: str) -> str:
    """regex gives a regex matcher on a declared label, e.g. ``http_route=~"$route"``."""
    return f'{label(spec, name)}=~"{pattern}"'


def present(spec: Spec, name: str) -> str:
    """present matches series that carry a declared label, e.g. ``error_type!=""``."""
    return f'{label(spec, name)}!=""'


def series(spec: Spec, suffix: str = "", matchers: Sequence[str] = ()) -> str:
    """series gives a scoped selector, e.g. ``x_count{job=~"$job",instance=~"$instance"}``.

    Raises:
        ConfigError: *suffix* does not exist for the spec's kind (``_bucket`` on a counter).
    """
    if suffix not in _SUFFIXES[spec.kind]:
        raise ConfigError(
            f"{spec.kind} {spec.prometheus_name!r} has no {suffix!r} series",
            allowed=_SUFFIXES[spec.kind],
        )
    return f"{spec.prometheus_name}{suffix}{{{', '.join((*SCOPE, *matchers))}}}"


def rate(selector: str, window: str = RATE_WINDOW) -> str:
    """rate wraps a selector, e.g. ``rate(x_count{...}[$__rate_interval])``."""
    return f"rate({selector}[{window}])"


def sum_by(by: Sequence[str], expr: str) -> str:
    """sum_by aggregates, e.g. ``sum by (http_route) (expr)``; no labels gives ``sum(expr)``."""
    return f"sum by ({', '.join(by)}) ({expr})" if by else f"sum({expr})"


def max_by(by: Sequence[str], expr: str) -> str:
    """max_by aggregates, e.g. ``max by (breaker) (expr)``: a state shown as its worst value."""
    return f"max by ({', '.join(by)}) ({expr})" if by else f"max({expr})"


def request_rate(spec: Spec, by: Sequence[str], matchers: Sequence[str] = ()) -> str:
    """request_rate gives requests per second from a histogram's ``_count``, grouped by *by*."""
    return sum_by([label(spec, b) for b in by], rate(series(spec, "_count", matchers)))


def quantile(q: float, spec: Spec, by: Sequence[str], matchers: Sequence[str] = ()) -> str:
    """quantile gives ``histogram_quantile(q, sum by (le, ...) (rate(x_bucket[...])))``."""
    by_le = ["le", *(label(spec, b) for b in by)]
    return f"histogram_quantile({q}, {sum_by(by_le, rate(series(spec, '_bucket', matchers)))})"


def error_ratio(
    spec: Spec,
    by: Sequence[str],
    errors: Sequence[Sequence[str]],
    matchers: Sequence[str] = (),
) -> str:
    """error_ratio gives failed over all requests from ``_count``, 0 (not empty) without failures.

    *errors* lists alternative matcher sets, any of which marks a failed series, e.g. a 5xx status
    or an ``error_type``; ``or`` keeps a series matching several of them once.
    """
    by = [label(spec, b) for b in by]
    failed = " or ".join(rate(series(spec, "_count", (*matchers, *e))) for e in errors)
    total = sum_by(by, rate(series(spec, "_count", matchers)))
    # "or total * 0" turns "no failures yet" into 0 instead of an empty panel.
    return f"({sum_by(by, failed)} or {total} * 0) / {total}"
