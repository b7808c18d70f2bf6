"""grafana_schema: validate dashboard JSON offline against Grafana's own JSON Schemas.

The schemas are the grafana-foundation-sdk's draft-07 files, vendored with their licence in
``tests/specs/grafana-foundation-sdk-jsonschema/``. The dashboard schema leaves panel ``options``,
``fieldConfig.defaults.custom`` and ``targets`` free, so each is checked against its panel type's
or data source's schema as well. Example::

    schemas = GrafanaSchemas(SCHEMA_DIR)
    assert schemas.errors(dashboard) == []
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker

__all__ = ["SCHEMA_DIR", "GrafanaSchemas", "walk_panels"]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the schemas live: vendored in the repository, with their licence and source.
SCHEMA_DIR = REPO_ROOT / "tests" / "specs" / "grafana-foundation-sdk-jsonschema"


def walk_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """walk_panels yields every panel, rows and the panels nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) if panel.get("type") == "row" else ()


def _path(prefix: str, error: Any) -> str:
    return prefix + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)


class GrafanaSchemas:
    """GrafanaSchemas checks dashboards, panels and Prometheus targets; errors() lists problems."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._validators: dict[tuple[str, str], Draft7Validator | None] = {}

    def _validator(self, file: str, definition: str) -> Draft7Validator | None:
        """A validator for one definition of a schema file; None if either is missing."""
        key = (file, definition)
        if key not in self._validators:
            path = self._directory / f"{file}.jsonschema.json"
            definitions = json.loads(path.read_text())["definitions"] if path.exists() else {}
            self._validators[key] = (
                Draft7Validator(
                    {
                        "$schema": "http://json-schema.org/draft-07/schema#",
                        "$ref": f"#/definitions/{definition}",
                        "definitions": definitions,
                    },
                    format_checker=FormatChecker(),
                )
                if definition in definitions
                else None
            )
        return self._validators[key]

    def _check(self, file: str, definition: str, instance: object, where: str) -> list[str]:
        validator = self._validator(file, definition)
        if validator is None:
            return [f"{where}: no schema {file}#/definitions/{definition}"]
        return [
            f"{_path(where, e)}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        ]

    def errors(self, dashboard: dict[str, Any]) -> list[str]:
        """errors lists every schema violation in *dashboard* as ``path: message``; [] if valid."""
        found: list[str] = []
        validator = self._validator("dashboard", "Dashboard")
        assert validator is not None, f"dashboard schema missing under {self._directory}"
        for error in sorted(validator.iter_errors(dashboard), key=lambda e: list(e.path)):
            path = list(error.path)
            if error.validator == "oneOf" and len(path) == 2 and path[0] == "panels":
                # panels[] is oneOf [Panel, RowPanel]: re-check against the one meant, for a
                # message naming the bad key instead of one opaque blob.
                panel = error.instance
                kind = (
                    "RowPanel"
                    if isinstance(panel, dict) and panel.get("type") == "row"
                    else "Panel"
                )
                found += self._check("dashboard", kind, panel, f"panels[{path[1]}]") or [
                    f"panels[{path[1]}]: {error.message}"
                ]
            else:
                found.append(f"{_path('', error)}: {error.message}")
        for index, panel in enumerate(walk_panels(dashboard)):
            if isinstance(panel, dict):
                found += self._panel_errors(panel, f"panel {panel.get('id', index)!r}")
        return found

    def _panel_errors(self, panel: dict[str, Any], where: str) -> list[str]:
        kind = panel.get("type")
        if kind == "row" or not isinstance(kind, str):
            return []
        found: list[str] = []
        if "options" in panel:
            found += self._check(kind, "Options", panel["options"], f"{where}.options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if self._validator(kind, "FieldConfig") is not None:
                found += self._check(kind, "FieldConfig", custom, f"{where}.custom")
            elif custom:
                found.append(f"{where}.custom: {kind} panels take no custom field config")
        for number, query in enumerate(panel.get("targets", [])):
            source = query.get("datasource") or panel.get("datasource") or {}
            if isinstance(source, dict) and source.get("type") == "prometheus":
                found += self._check("prometheus", "Dataquery", query, f"{where}.targets[{number}]")
        return found
