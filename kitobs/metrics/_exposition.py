"""Prometheus text 0.0.4 and OpenMetrics 1.0 rendering of kitobs' own registry.

Children cache their line prefixes (``name{labels} ``), so rendering is mostly string joins.
Also the HTTP content negotiation (`negotiate`) shared by the WSGI and ASGI apps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kitobs.metrics._declare import Core, Declaration, Family
from kitobs.metrics._store import (
    CounterValue,
    ExemplarHistogramValue,
    GaugeValue,
    HistogramValue,
    fmt,
)

__all__ = [
    "TEXT",
    "OPENMETRICS",
    "Extra",
    "escape_value",
    "escape_help",
    "exemplar_suffix",
    "label_block",
    "histogram_prefixes",
    "callback_samples",
    "render",
    "negotiate",
]

#: Content type of the Prometheus text exposition format 0.0.4.
TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: Content type of the OpenMetrics 1.0 text format, served when a scraper asks for it.
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: Extra metrics read at collection time, e.g. process metrics: declaration and samples.
Extra = Callable[[], Iterable[tuple[Declaration, list[tuple[tuple[str, ...], float]]]]]


def escape_value(value: str) -> str:
    """escape_value escapes a label value, e.g. ``a"b`` → ``a\\"b``."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """escape_help escapes HELP text (backslash and newline)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


#: OpenMetrics caps an exemplar's label set, names and values together, at 128 code points.
_EXEMPLAR_ROOM = 128 - len("trace_id") - len("span_id")


def exemplar_suffix(trace_id: str, span_id: str, value: float, timestamp: float) -> str:
    """exemplar_suffix renders a bucket's exemplar: `` # {trace_id="…",span_id="…"} 0.2 1.5``.

    It is "" when the ids are too long for OpenMetrics' limit: one bad exemplar must not make
    Prometheus reject the whole scrape.
    """
    if len(trace_id) + len(span_id) > _EXEMPLAR_ROOM:
        return ""
    return (
        f' # {{trace_id="{escape_value(trace_id)}",span_id="{escape_value(span_id)}"}} '
        f"{fmt(value)} {timestamp:.3f}"
    )


def label_block(names: Iterable[str], values: Iterable[str]) -> str:
    """label_block renders ``a="x",b="y"`` (no braces), skipping empty values."""
    return ",".join(
        f'{n}="{escape_value(v)}"' for n, v in zip(names, values, strict=True) if v != ""
    )


def sample_prefix(name: str, block: str) -> str:
    """sample_prefix renders ``name{block} `` or ``name `` when the block is empty."""
    return f"{name}{{{block}}} " if block else f"{name} "


def histogram_prefixes(name: str, block: str, bounds: tuple[float, ...]) -> tuple[str, ...]:
    """histogram_prefixes gives the bucket, ``_sum`` and ``_count`` line prefixes of a series."""
    sep = "," if block else ""
    buckets = [f'{name}_bucket{{{block}{sep}le="{fmt(b)}"}} ' for b in bounds]
    buckets.append(f'{name}_bucket{{{block}{sep}le="+Inf"}} ')
    return (*buckets, sample_prefix(name + "_sum", block), sample_prefix(name + "_count", block))


def callback_samples(family: Family[Any]) -> list[tuple[tuple[str, ...], float]]:
    """callback_samples reads a gauge's callback: (label values, value) pairs; [] if it fails."""
    cb = family.callback
    if cb is None:
        return []
    try:
        got = cb()
    except Exception:  # a failing callback drops its own series, not the whole scrape
        return []
    if isinstance(got, Mapping):
        return [(tuple(k), float(v)) for k, v in got.items()]
    return [((), float(got))] if not family.decl.labels else [(("",) * family.n, float(got))]


def render(
    core: Core,
    *,
    openmetrics: bool = False,
    created: bool = False,
    extra: Extra | None = None,
) -> bytes:
    """render renders every metric of *core* (and *extra*) as text 0.0.4 or OpenMetrics."""
    out: list[str] = []
    append = out.append
    common_names, common_values = core.common_names, core.common_values
    for decl, metric in core.metrics():
        if not isinstance(metric, Family):
            continue
        _render_family(out, decl, metric, openmetrics, created, common_names, common_values)
    if extra is not None:
        with contextlib.suppress(Exception):  # process figures must not break the scrape
            for decl, samples in extra():
                _render_samples(out, decl, samples, openmetrics, common_names, common_values)
    if openmetrics:
        append("# EOF\n")
    return "".join(out).encode()


def _head(out: list[str], decl: Declaration, openmetrics: bool) -> str:
    name = decl.prometheus_name
    family_name = name
    if openmetrics and decl.kind == "counter":
        family_name = name[: -len("_total")]
    out.append(f"# HELP {family_name} {escape_help(decl.help)}\n")
    out.append(f"# TYPE {family_name} {decl.kind}\n")
    if openmetrics and decl.unit:
        out.append(f"# UNIT {family_name} {decl.unit}\n")
    return name


def _render_samples(
    out: list[str],
    decl: Declaration,
    samples: list[tuple[tuple[str, ...], float]],
    openmetrics: bool,
    common_names: tuple[str, ...],
    common_values: tuple[str, ...],
) -> None:
    name = _head(out, decl, openmetrics)
    names = common_names + decl.labels
    for values, value in samples:
        block = label_block(names, common_values + values)
        out.append(f"{sample_prefix(name, block)}{fmt(value)}\n")


def _render_family(
    out: list[str],
    decl: Declaration,
    family: Family[object],
    openmetrics: bool,
    created: bool,
    common_names: tuple[str, ...],
    common_values: tuple[str, ...],
) -> None:
    if family.callback is not None:
        samples = callback_samples(family)
        _render_samples(out, decl, samples, openmetrics, common_names, common_values)
        return
    name = _head(out, decl, openmetrics)
    append = out.append
    children = tuple(family.series.values())
    kind = decl.kind
    if kind == "histogram":
        for child in children:
            assert isinstance(child, HistogramValue)
            _render_histogram(out, name, child, openmetrics, created)
        return
    base = name[: -len("_total")] if kind == "counter" else name
    for child in children:
        assert isinstance(child, CounterValue | GaugeValue)
        append(child.key)
        append(fmt(child.value))
        append("\n")
        if created and kind == "counter":
            append(child.key.replace(name, base + "_created", 1))
            append(fmt(child.created))
            append("\n")


def _render_histogram(
    out: list[str], name: str, child: HistogramValue, openmetrics: bool, created: bool
) -> None:
    counts, total = child.snapshot()
    prefixes = child.key
    exemplars = child.exemplars if isinstance(child, ExemplarHistogramValue) else None
    running = 0
    append = out.append
    for i, count in enumerate(counts):
        running += count
        append(prefixes[i])
        append(str(running))
        if openmetrics and exemplars is not None:
            ex = exemplars[i]
            if ex is not None:
                append(exemplar_suffix(ex.trace_id, ex.span_id, ex.value, ex.timestamp))
        append("\n")
    n = len(counts)
    append(prefixes[n])
    append(fmt(total))
    append("\n")
    append(prefixes[n + 1])
    append(str(running))
    append("\n")
    if created:
        append(prefixes[n + 1].replace(name + "_count", name + "_created", 1))
        append(fmt(child.created))
        append("\n")


def negotiate(accept: str) -> bool:
    """negotiate says whether an Accept header asks for OpenMetrics, e.g. Prometheus' own."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/openmetrics-text":
            params = part.lower().replace(" ", "")
            return "q=0;" not in params + ";" and not params.endswith("q=0")
    return False
