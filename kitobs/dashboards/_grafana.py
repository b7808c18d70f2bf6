"""Grafana 11 dashboard JSON as plain dicts: panels, targets, variables, rows and their layout.

Panels are built without ``id``, ``gridPos`` or ``refId``; `dashboard` lays them out (rows of
cells, left to right, wrapping at 24 columns) and numbers them, so ids and refIds are unique and
panels never overlap by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "JSON",
    "SCHEMA_VERSION",
    "datasource_ref",
    "Cell",
    "Section",
    "target",
    "timeseries",
    "stat",
    "datasource_variable",
    "query_variable",
    "dashboard",
]

#: A JSON object as Python builds it.
JSON = dict[str, object]

#: Grafana 11.0's dashboard schema version; later Grafana versions migrate it up on load.
SCHEMA_VERSION = 39
_GRID_WIDTH = 24


@dataclass(frozen=True, slots=True)
class Cell:
    """Cell places one panel in a section, e.g. ``Cell(stat(...), w=4, h=4)``."""

    panel: JSON
    w: int = 8
    h: int = 8


@dataclass(frozen=True, slots=True)
class Section:
    """Section is a dashboard row and its cells, e.g. ``Section("HTTP server", cells)``."""

    title: str
    cells: tuple[Cell, ...]


def datasource_ref() -> JSON:
    """datasource_ref points at the data source chosen in the ``datasource`` variable.

    A new dict each time, so changing one built dashboard never changes another.
    """
    return {"type": "prometheus", "uid": "${datasource}"}


def target(expr: str, legend: str, *, exemplar: bool = False, instant: bool = False) -> JSON:
    """target is one Prometheus query of a panel, e.g. ``target("up", "{{instance}}")``."""
    return {
        "datasource": datasource_ref(),
        "editorMode": "code",
        "exemplar": exemplar,
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> JSON:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


_GREEN: tuple[tuple[float | None, str], ...] = ((None, "green"),)


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[JSON],
    *,
    max_value: float | None = None,
    stack: bool = False,
) -> JSON:
    """timeseries is a line-graph panel, e.g. request rate per route in ``reqps``."""
    defaults: JSON = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisBorderShow": False,
            "axisCenteredZero": False,
            "axisColorMode": "text",
            "axisLabel": "",
            "axisPlacement": "auto",
            "barAlignment": 0,
            "drawStyle": "line",
            "fillOpacity": 10,
            "gradientMode": "none",
            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
            "insertNulls": False,
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "pointSize": 5,
            "scaleDistribution": {"type": "linear"},
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
            "thresholdsStyle": {"mode": "off"},
        },
        "min": 0,
        "thresholds": _thresholds(_GREEN),
        "unit": unit,
    }
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "datasource": datasource_ref(),
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": [],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": list(targets),
        "title": title,
        "type": "timeseries",
    }


def stat(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    warn: float | None = None,
    alert: float | None = None,
) -> JSON:
    """stat is a single-number panel, e.g. the error ratio turning red above *alert*."""
    steps: list[tuple[float | None, str]] = list(_GREEN)
    if warn is not None:
        steps.append((warn, "orange"))
    if alert is not None:
        steps.append((alert, "red"))
    return {
        "datasource": datasource_ref(),
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "mappings": [],
                "thresholds": _thresholds(steps),
                "unit": unit,
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "auto",
            "wideLayout": True,
        },
        "targets": [target(expr, "")],
        "title": title,
        "type": "stat",
    }


def datasource_variable() -> JSON:
    """datasource_variable lets the importer pick the Prometheus data source (``$datasource``)."""
    return {
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(name: str, label: str, metric_selector: str, label_name: str) -> JSON:
    """query_variable lists a label's values, e.g. ``label_values(up{job=~"$job"}, instance)``.

    It allows several values and "All" (``.*``), selected by default.
    """
    query = f"label_values({metric_selector}, {label_name})"
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": datasource_ref(),
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def _layout(sections: Sequence[Section]) -> list[JSON]:
    panels: list[JSON] = []
    y = 0
    for section in sections:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": _GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
                "title": section.title,
                "type": "row",
            }
        )
        y += 1
        x = line_height = 0
        for cell in section.cells:
            if x + cell.w > _GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append({**cell.panel, "gridPos": {"h": cell.h, "w": cell.w, "x": x, "y": y}})
            x += cell.w
            line_height = max(line_height, cell.h)
        y += line_height
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
        targets = panel.get("targets")
        if isinstance(targets, list):
            # refIds A, B, C... in query order, as Grafana's editor assigns them.
            panel["targets"] = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    return panels


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[JSON],
    sections: Sequence[Section],
    *,
    tags: Sequence[str] = ("kitobs",),
) -> JSON:
    """dashboard assembles a Grafana 11 dashboard, e.g. ``dashboard("kitobs-overview", ...)``.

    The ``datasource`` variable comes first; links lead to the other dashboards sharing *tags*.
    """
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": list(tags),
                "targetBlank": False,
                "title": "kitobs dashboards",
                "tooltip": "",
                "type": "dashboards",
            }
        ],
        "panels": _layout(sections),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(tags),
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
