"""kitobs demo's arguments: a bad port, rate or duration is a usage error (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kitobs.demo import run
from kitobs.errors import ConfigError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--port", "99999"], "argument --port: port must be 0..65535, got 99999", id="port-high"
        ),
        pytest.param(
            ["--port", "-5"], "argument --port: port must be 0..65535, got -5", id="port-negative"
        ),
        pytest.param(
            ["--port", "http"],
            "argument --port: port must be a whole number, got 'http'",
            id="port-text",
        ),
        pytest.param(
            ["--port", "0", "--grpc-port", "70000"],
            "argument --grpc-port: port must be 0..65535, got 70000 (or -1 for no gRPC server)",
            id="grpc-port-high",
        ),
        pytest.param(
            ["--port", "0", "--grpc-port", "-1", "--load", "nan", "--duration", "0.01"],
            "argument --load: load must be a finite number >= 0, got nan",
            id="load-nan",
        ),
        pytest.param(
            ["--port", "0", "--grpc-port", "-1", "--load", "-3", "--duration", "0.01"],
            "argument --load: load must be a finite number >= 0, got -3",
            id="load-negative",
        ),
        pytest.param(
            ["--port", "0", "--grpc-port", "-1", "--duration", "-1"],
            "argument --duration: duration must be a finite number >= 0, got -1",
            id="duration-negative",
        ),
    ],
)
def test_bad_demo_arguments_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    # A subprocess with a timeout: a value that slips through starts the demo, which must not
    # hang the test run.
    proc = subprocess.run(
        [sys.executable, "-m", "kitobs", "demo", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"kitobs demo: error: {message}" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"port": 99999}, "port must be 0..65535", id="port"),
        pytest.param({"port": 0, "grpc_port": -2}, "gRPC port must be 0..65535, or -1", id="grpc"),
    ],
)
def test_run_rejects_bad_ports_before_starting(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(**kwargs, env={}, duration=0.01)  # type: ignore[arg-type]
