"""Tests for the kitobs command's configuration handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kitobs import config
from kitobs.cli import main


def test_config_reference_prints_the_generated_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == config.reference()


def test_config_show_prints_effective_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "k.toml"
    file.write_text('[log]\nformat = "json"\n')
    monkeypatch.setenv("KITOBS_METRICS_STATSD_FLAVOR", "telegraf")
    assert main(["config", "show", "--config", str(file)]) == 0
    out = capsys.readouterr().out
    assert "log.format = 'json'" in out
    assert "metrics.statsd.flavor = 'telegraf'" in out


def test_config_error_exits_2_with_message_and_no_traceback(tmp_path: Path) -> None:
    env = {"KITOBS_LOG_LEVEL": "shouty", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "kitobs", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "KITOBS_LOG_LEVEL" in proc.stderr
    assert "'shouty'" in proc.stderr


def test_demo_rejects_a_bad_config_file_without_traceback(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('[metrics]\nbackend = "graphite"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "kitobs", "demo", "--config", str(file), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "metrics.backend" in proc.stderr
    assert "'graphite'" in proc.stderr


def test_metric_names_doc_matches_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    from kitobs import contract

    assert main(["contract", "reference"]) == 0
    out = capsys.readouterr().out
    assert out == contract.reference()
    doc = Path(__file__).parents[2] / "docs" / "metric-names.md"
    assert doc.read_text() == out, (
        "docs/metric-names.md is out of date: "
        "run `kitobs contract reference > docs/metric-names.md`"
    )
    for spec in contract.ALL:
        assert f"| `{spec.prometheus_name}` |" in out
