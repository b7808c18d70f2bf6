"""dashboards: Grafana dashboards generated from the metric contract, so they cannot drift.

`build` returns the dashboards as plain dicts (Grafana 11 dashboard JSON, schemaVersion 39):
a service overview, RED by transport, and runtime with kitobs' own health. Metric and label
names come from `kitobs.contract`; a data source variable (``$datasource``) and ``job``,
``instance``, route, endpoint and RPC method variables replace anything instance-specific, so
they import anywhere. `export` writes them, with Grafana provisioning examples that link
``trace_id`` exemplars to Zipkin and Tempo, e.g. ``kitobs dashboards export --out dashboards``
or ``python -m kitobs.dashboards --out dashboards``.

Example::

    >>> sorted(build())
    ['kitobs-overview.json', 'kitobs-red.json', 'kitobs-runtime.json']
    >>> build()["kitobs-overview.json"]["uid"]
    'kitobs-overview'

Not provided: dashboards for statsd (Graphite-style) storage; see ``dashboards/README.md``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from kitobs.dashboards._content import dashboards as _dashboards
from kitobs.dashboards._grafana import JSON

__all__ = ["JSON", "PROVISIONING", "build", "render", "export"]

#: Provisioning examples shipped in the package, written by `export` under ``provisioning/``.
PROVISIONING: tuple[str, ...] = ("dashboards.yaml", "datasources.yaml")


def build() -> dict[str, JSON]:
    """build returns every dashboard by file name, e.g. ``build()["kitobs-red.json"]``."""
    return dict(sorted(_dashboards().items()))


def render(dashboard: JSON) -> str:
    """render gives a dashboard's file text: sorted keys, 2-space indent, a final newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(out_dir: Path) -> list[Path]:
    """export writes the dashboards and provisioning examples, e.g. ``export(Path("dashboards"))``.

    Output is byte-for-byte deterministic. Other files in *out_dir* are left alone. Returns the
    paths written, sorted.
    """
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, dashboard in build().items():
        path = out_dir / name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    package = resources.files(__name__).joinpath("provisioning")
    (out_dir / "provisioning").mkdir(exist_ok=True)
    for name in PROVISIONING:
        path = out_dir / "provisioning" / name
        path.write_text(package.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
        written.append(path)
    return sorted(written)
