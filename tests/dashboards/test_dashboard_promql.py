"""The PromQL builder refuses names the contract does not declare, at build time."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitobs import contract
from kitobs.cli import main as cli_main
from kitobs.dashboards import _promql as q
from kitobs.dashboards import build
from kitobs.errors import ConfigError

HTTP = contract.HTTP_SERVER_REQUEST_DURATION
DROPPED = contract.TELEMETRY_DROPPED


def test_label_must_be_declared_by_the_spec() -> None:
    assert q.label(HTTP, "http_route") == "http_route"
    with pytest.raises(ConfigError, match="has no label 'route'") as caught:
        q.label(HTTP, "route")
    assert caught.value.allowed == HTTP.labels
    with pytest.raises(ConfigError, match="has no label 'http_route'"):
        q.regex(DROPPED, "http_route", ".*")


def test_series_suffix_must_fit_the_kind() -> None:
    assert q.series(DROPPED) == 'kitobs_telemetry_dropped_total{job=~"$job", instance=~"$instance"}'
    assert q.series(HTTP, "_bucket", [q.eq(HTTP, "http_route", "/a")]) == (
        'http_server_request_duration_seconds_bucket{job=~"$job", instance=~"$instance", '
        'http_route="/a"}'
    )
    with pytest.raises(ConfigError, match="no '_bucket' series"):
        q.series(DROPPED, "_bucket")
    with pytest.raises(ConfigError, match="no '' series"):
        q.series(HTTP)


def test_quantile_groups_by_le_and_the_labels() -> None:
    expr = q.quantile(0.9, HTTP, ["http_route"])
    assert expr.startswith("histogram_quantile(0.9, sum by (le, http_route) (rate(")
    assert expr.endswith("_bucket{" + ", ".join(q.SCOPE) + "}[$__rate_interval])))")


def test_cli_export_writes_what_build_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["dashboards", "export", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed if p.endswith(".json")) == sorted(build())


def test_main_module_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kitobs.dashboards.__main__ import main

    assert main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(p) for p in sorted(tmp_path.rglob("*.*"))]
    assert len(printed) == len(build()) + 2  # and the two provisioning examples
