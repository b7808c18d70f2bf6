"""queries: the PromQL a dashboard runs, with its template variables filled in.

For the live test against a real Prometheus and for promtool, e.g.::

    for expr in panel_queries(dashboard, all_values(dashboard)):
        prometheus_query(url, expr)

Grafana's interval variables (``$__rate_interval``, ``$__interval``, ``$__range``) default to
``5m``; pass them in *variables* (without the ``$``) to override.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "BUILTINS",
    "all_values",
    "panel_queries",
    "variable_queries",
    "variable_names",
    "substitute",
    "metric_names",
    "label_names",
]

#: Grafana's built-in interval variables and the value they get unless the caller gives one.
BUILTINS: dict[str, str] = {"__rate_interval": "5m", "__interval": "5m", "__range": "5m"}

# ${name}, ${name:format}, [[name]] and $name, as Grafana's template service accepts them.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        if panel.get("type") == "row":
            yield from panel.get("panels", [])


def variable_names(dashboard: Mapping[str, Any]) -> list[str]:
    """variable_names lists the dashboard's template variables, e.g. ``["datasource", "job"]``."""
    return [v["name"] for v in dashboard.get("templating", {}).get("list", [])]


def all_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """all_values maps each query variable to its "All" value, e.g. ``{"job": ".*"}``."""
    return {
        v["name"]: v.get("allValue", ".*")
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    }


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """substitute fills in ``$job``, ``${job}`` and ``[[job]]``, e.g. ``up{job=~"$job"}``.

    Raises:
        KeyError: *expr* uses a variable neither *variables* nor `BUILTINS` defines.
    """
    values = {**BUILTINS, **variables}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"{expr!r} uses ${name}, which is not defined; have {sorted(values)}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def panel_queries(dashboard: Mapping[str, Any], variables: Mapping[str, str]) -> list[str]:
    """panel_queries returns every panel target's ``expr``, variables filled in, in panel order.

    Hidden targets are left out: Grafana does not show their result.
    """
    return [
        substitute(target["expr"], variables)
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target and not target.get("hide", False)
    ]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def variable_queries(
    dashboard: Mapping[str, Any], variables: Mapping[str, str]
) -> list[tuple[str, str]]:
    """variable_queries gives (selector, label) of each ``label_values(...)`` query variable.

    For example ``("kitobs_telemetry_dropped_total", "job")``; variables filled in.
    """
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"])
        if match is None:
            raise ValueError(f"variable {variable['name']}: not label_values(selector, label)")
        found.append((substitute(match["selector"], variables), match["label"]))
    return found


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"})
_KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """metric_names lists the metrics a PromQL expression selects, e.g. ``{"up"}`` for ``sum(up)``.

    Function names, keywords, label names and strings are left out.
    """
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function call or an operator
        if match.start() > 0 and (
            text[match.start() - 1].isdigit() or text[match.start() - 1] == "."
        ):
            continue  # the exponent or unit of a number, e.g. 1e3
        names.add(match.group())
    return names


def label_names(expr: str) -> set[str]:
    """label_names lists labels a PromQL expression matches or groups on, e.g. ``{"job"}``."""
    text = _STRING.sub('""', expr)
    names = set()
    for match in _GROUPING.finditer(text):
        names |= {n.strip() for n in match.group(2).split(",") if n.strip()}
    for match in _MATCHERS.finditer(text):
        names |= {m.group(1) for m in re.finditer(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(1))}
    return names
