"""The shipped Grafana dashboards: Grafana's schemas, promtool and the metric contract agree.

Offline: Grafana's JSON Schemas (no server), promtool (Debian's prometheus package), and the
contract in kitobs.contract. The live check against a real Prometheus is elsewhere.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from kitobs import contract
from kitobs.dashboards import PROVISIONING, build, export, render
from kitobs.dashboards._content import PROCESS_METRICS, QUANTILES
from tests.dashboards import queries
from tests.dashboards.grafana_schema import REPO_ROOT, SCHEMA_DIR, GrafanaSchemas, walk_panels
from tests.support import servers

# Plain JSON from here on: the tests index into it freely.
DASHBOARDS = cast(dict[str, dict[str, Any]], build())
NAMES = sorted(DASHBOARDS)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPORT_HINT = "run `kitobs dashboards export --out dashboards` and commit the result"


def _missing(reason: str) -> None:
    if servers.servers_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def schemas() -> GrafanaSchemas:
    if not (SCHEMA_DIR / "dashboard.jsonschema.json").exists():
        _missing(f"Grafana JSON schemas not found in {SCHEMA_DIR}")
    return GrafanaSchemas(SCHEMA_DIR)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("KITOBSTEST_PROMTOOL") or shutil.which("promtool")
    if not path:
        _missing("promtool not found: set KITOBSTEST_PROMTOOL or install Debian's prometheus")
    assert path is not None
    return path


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in walk_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def _all_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and the selectors of query variables."""
    values = queries.all_values(dashboard)
    return queries.panel_queries(dashboard, values) + [
        selector for selector, _ in queries.variable_queries(dashboard, values)
    ]


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [p for p in walk_panels(dashboard) if p.get("title") == title]
    assert len(matches) == 1, f"want one panel {title!r}, have {len(matches)}"
    return matches[0]


# --- Grafana's schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_matches_grafana_schemas(schemas: GrafanaSchemas, name: str) -> None:
    assert schemas.errors(DASHBOARDS[name]) == []


def _broken(change: str) -> dict[str, Any]:
    dashboard = copy.deepcopy(DASHBOARDS["kitobs-overview.json"])
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    if change == "unknown dashboard key":
        dashboard["bogusKey"] = 1
    elif change == "unknown panel key":
        panel["bogusPanelKey"] = 1
    elif change == "gridPos too wide":
        panel["gridPos"]["w"] = 30
    elif change == "legend mode":
        panel["options"]["legend"]["displayMode"] = "bogus"
    elif change == "draw style":
        panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "bogus"
    elif change == "expr not a string":
        panel["targets"][0]["expr"] = 5
    elif change == "legacy datasource string":
        panel["datasource"] = "$datasource"
    elif change == "no schemaVersion":
        del dashboard["schemaVersion"]
    return dashboard


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown dashboard key", "'bogusKey' was unexpected"),
        ("unknown panel key", "'bogusPanelKey' was unexpected"),
        ("gridPos too wide", "30 is greater than the maximum of 24"),
        ("legend mode", "'bogus' is not one of ['list', 'table', 'hidden']"),
        ("draw style", "'bogus' is not one of ['line', 'bars', 'points']"),
        ("expr not a string", "5 is not of type 'string'"),
        ("legacy datasource string", "'$datasource' is not of type 'object'"),
        ("no schemaVersion", "'schemaVersion' is a required property"),
    ],
)
def test_schema_check_rejects_broken_dashboard(
    schemas: GrafanaSchemas, change: str, message: str
) -> None:
    errors = schemas.errors(_broken(change))
    assert any(message in e for e in errors), errors


# --- What the schemas do not check: ids, refIds, layout -------------------------------------------


def duplicate_ids(dashboard: dict[str, Any]) -> list[object]:
    ids = [p.get("id") for p in walk_panels(dashboard)]
    return sorted({i for i in ids if ids.count(i) > 1}, key=repr) + (
        ["missing id"] if None in ids else []
    )


def duplicate_ref_ids(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in walk_panels(dashboard):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(set(refs)) != len(refs) or None in refs:
            found.append(f"panel {panel.get('id')}: refIds {refs}")
    return found


def overlaps(dashboard: dict[str, Any]) -> list[str]:
    boxes = [(p.get("id"), p["gridPos"]) for p in dashboard["panels"]]
    found = []
    for (a, g), (b, h) in itertools.combinations(boxes, 2):
        if (
            g["x"] < h["x"] + h["w"]
            and h["x"] < g["x"] + g["w"]
            and g["y"] < h["y"] + h["h"]
            and h["y"] < g["y"] + g["h"]
        ):
            found.append(f"panels {a} and {b} overlap")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_ids_unique_and_panels_apart(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert duplicate_ids(dashboard) == []
    assert duplicate_ref_ids(dashboard) == []
    assert overlaps(dashboard) == []
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])


def test_layout_checks_catch_broken_dashboards() -> None:
    dashboard = copy.deepcopy(DASHBOARDS["kitobs-overview.json"])
    first, second = [p for p in dashboard["panels"] if p["type"] != "row"][:2]
    second["id"] = first["id"]
    second["gridPos"] = {**first["gridPos"], "x": first["gridPos"]["x"] + 1}
    latency = _panel(dashboard, "Latency by route")
    latency["targets"][1]["refId"] = latency["targets"][0]["refId"]
    assert duplicate_ids(dashboard) == [first["id"]]
    assert len(overlaps(dashboard)) == 1
    assert duplicate_ref_ids(dashboard) == [f"panel {latency['id']}: refIds ['A', 'A', 'C']"]


# --- Importable anywhere: Grafana 11, stable uids, data source variable ---------------------------


@pytest.mark.parametrize("name", NAMES)
def test_importable_anywhere(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert 39 <= dashboard["schemaVersion"] <= 41
    assert name == f"{dashboard['uid']}.json"
    assert 8 <= len(dashboard["uid"]) <= 40
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for required in ("job", "instance"):
        assert variables[required]["type"] == "query"
        assert variables[required]["query"].startswith("label_values(")
        assert variables[required]["datasource"] == DATASOURCE
    for panel in walk_panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
    for panel, target in _targets(dashboard):
        assert target["datasource"] == DATASOURCE, panel["title"]


def test_uids_stable_and_distinct() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert uids == ["kitobs-overview", "kitobs-red", "kitobs-runtime"]


def test_overview_has_route_and_endpoint_variables() -> None:
    names = queries.variable_names(DASHBOARDS["kitobs-overview.json"])
    assert names == ["datasource", "job", "instance", "route", "endpoint"]


# --- Content: units, exemplars, quantiles, error ratio --------------------------------------------


UNITS = {"s", "reqps", "percentunit", "bytes", "short", "cps", "dtdurations"}
# Histograms of something other than seconds (attempts per call): their quantiles are counts.
COUNT_HISTOGRAMS = {
    f"{s.prometheus_name}_bucket" for s in contract.ALL if s.kind == "histogram" and not s.unit
}


@pytest.mark.parametrize("name", NAMES)
def test_units_and_exemplars(name: str) -> None:
    for panel in walk_panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            continue
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit in UNITS, panel["title"]
        exprs = [t["expr"] for t in panel["targets"]]
        counts = any(m in COUNT_HISTOGRAMS for e in exprs for m in queries.metric_names(e))
        if any("histogram_quantile" in e for e in exprs):
            assert unit == ("short" if counts else "s"), panel["title"]
            if panel["type"] == "timeseries":
                assert all(t["exemplar"] is True for t in panel["targets"]), panel["title"]
        if "error ratio" in panel["title"].lower():
            assert unit == "percentunit", panel["title"]
        if "request" in panel["title"].lower() and "/s" in panel["title"]:
            assert unit == "reqps", panel["title"]


def test_latency_panels_show_p50_p90_p99_over_buckets() -> None:
    latency = [
        p
        for d in DASHBOARDS.values()
        for p in walk_panels(d)
        if p["type"] == "timeseries" and p["fieldConfig"]["defaults"]["unit"] == "s"
    ]
    covered = {m for p in latency for t in p["targets"] for m in queries.metric_names(t["expr"])}
    histograms = {
        f"{s.prometheus_name}_bucket"
        for s in contract.ALL
        if s.kind == "histogram" and s.unit == "seconds"
    }
    assert covered == histograms  # one latency panel at least per duration histogram
    for panel in latency:
        exprs = [t["expr"] for t in panel["targets"]]
        assert [e.split(",")[0] for e in exprs] == [f"histogram_quantile({p}" for p in QUANTILES]
        assert all("_bucket{" in e and "sum by (le" in e for e in exprs), panel["title"]


def test_every_contract_metric_is_on_a_dashboard() -> None:
    used = {m for d in DASHBOARDS.values() for e in _all_exprs(d) for m in queries.metric_names(e)}
    for spec in contract.ALL:
        if spec.kind == "histogram":
            want = {f"{spec.prometheus_name}_bucket", f"{spec.prometheus_name}_count"}
        else:
            want = {spec.prometheus_name}
        assert want <= used, f"{spec.prometheus_name} is on no dashboard"
    assert set(PROCESS_METRICS) <= used


def _known_metrics() -> dict[str, set[str]]:
    """Metric names a query may select → the labels it may use on them."""
    target = {"job", "instance"}
    known: dict[str, set[str]] = {}
    for spec in contract.ALL:
        labels = set(spec.labels) | target
        if spec.kind == "histogram":
            known[f"{spec.prometheus_name}_bucket"] = labels | {"le"}
            known[f"{spec.prometheus_name}_count"] = labels
            known[f"{spec.prometheus_name}_sum"] = labels
        else:
            known[spec.prometheus_name] = labels
    return known


@pytest.mark.parametrize("name", NAMES)
def test_queries_use_only_contract_metrics_and_labels(name: str) -> None:
    known = _known_metrics()
    for expr in _all_exprs(DASHBOARDS[name]):
        metrics = queries.metric_names(expr)
        assert metrics, f"no metric found in {expr!r}"
        allowed: set[str] = set()
        for metric in metrics:
            if metric.startswith(("process_", "python_")):
                allowed |= {"job", "instance", "generation"}
            else:
                assert metric in known, f"{metric!r} (in {expr!r}) is not in kitobs.contract"
                allowed |= known[metric]
        assert queries.label_names(expr) <= allowed, expr


def test_metric_and_label_extraction() -> None:
    expr = 'sum by (le, a) (rate(foo_bucket{job=~"$job", b!="x{y}"}[5m])) / on(a) bar * 1e3'
    assert queries.metric_names(expr) == {"foo_bucket", "bar"}
    assert queries.label_names(expr) == {"le", "a", "job", "b"}


@pytest.mark.parametrize("name", NAMES)
def test_every_variable_used_is_defined(name: str) -> None:
    dashboard = DASHBOARDS[name]
    defined = dict.fromkeys(queries.variable_names(dashboard), "x")
    exprs = queries.panel_queries(dashboard, defined)
    assert not any("$" in e for e in exprs)
    with pytest.raises(KeyError, match=r"\$job"):
        queries.panel_queries(dashboard, {})


def test_substitute_forms() -> None:
    have = queries.substitute(
        'x{a=~"$a", b="${b}", c="${c:regex}", d="[[d]]"}[$__range]',
        {"a": "1", "b": "2", "c": "3", "d": "4"},
    )
    assert have == 'x{a=~"1", b="2", c="3", d="4"}[5m]'


# --- promtool -------------------------------------------------------------------------------------


def _check_rules(
    promtool: str, exprs: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dash:expr:{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", NAMES)
def test_promtool_parses_every_query(promtool: str, name: str, tmp_path: Path) -> None:
    exprs = _all_exprs(DASHBOARDS[name])
    done = _check_rules(promtool, exprs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_promtool_check_rejects_a_broken_query(promtool: str, tmp_path: Path) -> None:
    done = _check_rules(promtool, ["up", "sum(rate(up[5m])"], tmp_path)
    assert done.returncode == 1
    assert "unclosed left parenthesis" in done.stdout + done.stderr


def test_error_ratio_counts_each_failure_once_and_shows_zero(promtool: str, tmp_path: Path) -> None:
    """Evaluate the route error-ratio panel's query on known series with promtool test rules."""
    dashboard = DASHBOARDS["kitobs-overview.json"]
    panel = _panel(dashboard, "Error ratio by route")
    values = {**queries.all_values(dashboard), "__rate_interval": "5m"}
    (expr,) = queries.panel_queries({"panels": [panel]}, values)
    name = f"{contract.HTTP_SERVER_REQUEST_DURATION.prometheus_name}_count"

    def series(route: str, status: str, error: str = "") -> str:
        labels = (
            f'job="app", instance="i", http_route="{route}", http_response_status_code="{status}"'
        )
        return f"{name}{{{labels}{f', error_type={error!r}' if error else ''}}}".replace("'", '"')

    # Rates per second at eval time: /a ok 2, 500 with error_type 1, error_type only 1; /b ok 1.
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series("/a", "200"), "values": "0+120x20"},
                    {"series": series("/a", "500", "500"), "values": "0+60x20"},
                    {"series": series("/a", "200", "TimeoutError"), "values": "0+60x20"},
                    {"series": series("/b", "200"), "values": "0+60x20"},
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": '{http_route="/a"}', "value": 0.5},
                            {"labels": '{http_route="/b"}', "value": 0},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Export: files in the repository are build()'s output -----------------------------------------


def test_committed_dashboards_are_up_to_date(tmp_path: Path) -> None:
    written = export(tmp_path)
    committed = REPO_ROOT / "dashboards"
    for path in written:
        relative = path.relative_to(tmp_path)
        mine = committed / relative
        assert mine.exists(), f"dashboards/{relative} is missing: {EXPORT_HINT}"
        assert mine.read_bytes() == path.read_bytes(), (
            f"dashboards/{relative} is stale: {EXPORT_HINT}"
        )
    stale = {p.name for p in committed.glob("*.json")} - set(DASHBOARDS)
    assert not stale, f"dashboards/ holds {sorted(stale)}, which kitobs no longer builds"


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in export(tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in export(tmp_path / "b")}
    assert first == second
    assert sorted(str(p) for p in first) == [
        *NAMES,
        *(f"provisioning/{n}" for n in PROVISIONING),
    ]
    for name in NAMES:
        text = first[Path(name)].decode()
        assert text.endswith("}\n")
        assert text == render(json.loads(text))
        assert json.loads(text) == DASHBOARDS[name]


def test_python_m_kitobs_dashboards(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kitobs.dashboards", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # from anywhere: the dashboards come from the package, not the checkout
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(p) for p in sorted((tmp_path / "out").rglob("*.*"))]
    assert (
        json.loads((tmp_path / "out" / "kitobs-red.json").read_text())
        == DASHBOARDS["kitobs-red.json"]
    )


# --- Provisioning example -------------------------------------------------------------------------


def test_datasources_link_trace_id_exemplars_to_zipkin_and_tempo(tmp_path: Path) -> None:
    export(tmp_path)
    config = yaml.safe_load((tmp_path / "provisioning" / "datasources.yaml").read_text())
    assert config["apiVersion"] == 1
    sources = {s["uid"]: s for s in config["datasources"]}
    (prometheus,) = (s for s in sources.values() if s["type"] == "prometheus")
    links = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert {link["name"] for link in links} == {"trace_id"}
    assert sorted(sources[link["datasourceUid"]]["type"] for link in links) == ["tempo", "zipkin"]
    for source in sources.values():
        assert source["url"].startswith("http://127.0.0.1:"), source["name"]


def test_dashboard_provider_example(tmp_path: Path) -> None:
    export(tmp_path)
    config = yaml.safe_load((tmp_path / "provisioning" / "dashboards.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


def test_export_works_from_the_wheel_alone(tmp_path: Path) -> None:
    """Build the wheel, unpack it, and export with only the stdlib and the wheel on the path."""
    servers.require_module("hatchling.build", "hatchling (the build backend) is not installed")
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(tmp_path / "dist" / built.stdout.strip()) as wheel:
        wheel.extractall(tmp_path / "site")
    done = subprocess.run(
        # -S: no site-packages, so neither the checkout (editable install) nor any dependency.
        [sys.executable, "-S", "-m", "kitobs.dashboards", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert done.returncode == 0, done.stderr
    for path in export(tmp_path / "expected"):
        relative = path.relative_to(tmp_path / "expected")
        assert (tmp_path / "out" / relative).read_bytes() == path.read_bytes(), relative


def test_built_dashboards_share_no_state() -> None:
    before = render(build()["kitobs-overview.json"])
    first = build()["kitobs-overview.json"]
    panel = cast(list[dict[str, Any]], first["panels"])[1]
    panel["datasource"]["uid"] = "changed"
    panel["targets"][0]["datasource"]["uid"] = "changed"
    assert render(build()["kitobs-overview.json"]) == before
