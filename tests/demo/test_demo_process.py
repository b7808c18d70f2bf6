"""The demo as a user runs it: a real process, real HTTP, logs on stderr, clean stop on signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demo.demo_process import Demo, start_demo, wait_for


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = start_demo(tmp_path)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(timeout=90)
    assert running.proc.stdout is not None
    running.proc.stdout.close()


def test_demo_serves_its_routes_and_logs_each_call(demo: Demo) -> None:
    status, body = demo.get("/sum?a=2&b=3")
    assert status == 200
    assert json.loads(body) == {"value": 5}
    status, body = demo.get("/sum?a=1000000&b=1")
    assert status == 422
    status, _ = demo.get("/no/such/route")
    assert status == 404
    status, body = demo.get("/concat?a=kit&b=obs")
    assert json.loads(body) == {"value": "kitobs"}

    def logged() -> bool:
        lines = demo.log_lines()
        return any("endpoint=sum" in line and "outcome=business_error" in line for line in lines)

    wait_for(logged)
    lines = demo.log_lines()
    sums = [line for line in lines if "endpoint=sum" in line]
    assert any("outcome=success" in line for line in sums)
    for line in sums:
        assert line.startswith("ts="), line
        assert " level=" in line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_cleanly_on_signals(tmp_path: Path, signum: int) -> None:
    running = start_demo(tmp_path)
    assert running.get("/healthz")[0] == 200
    running.proc.send_signal(signum)
    assert running.proc.wait(timeout=90) == 0
    assert running.proc.stdout is not None
    rest = running.proc.stdout.read()
    running.proc.stdout.close()
    assert "kitobs demo stopped" in rest
    assert "Traceback" not in running.stderr.read_text()


def test_demo_load_sends_requests_itself(tmp_path: Path) -> None:
    running = start_demo(tmp_path, "--load", "50")
    try:
        wait_for(lambda: sum("endpoint=" in line for line in running.log_lines()) >= 10)
    finally:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=90) == 0
        assert running.proc.stdout is not None
        running.proc.stdout.close()


def test_demo_reports_a_busy_port_without_traceback(tmp_path: Path, demo: Demo) -> None:
    port = demo.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "kitobs", "demo", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_never_logs_credentials_from_query_strings(tmp_path: Path) -> None:
    running = start_demo(tmp_path, "--grpc-port", "-1")
    try:
        status, _ = running.get("/sum?a=1&b=2&token=hunter2&api_key=swordfish")
        assert status == 200
        wait_for(lambda: any("kind=server" in line for line in running.log_lines()))
    finally:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=90) == 0
        assert running.proc.stdout is not None
        running.proc.stdout.close()
    log = running.stderr.read_text()
    assert "endpoint=sum" in log
    assert "hunter2" not in log
    assert "swordfish" not in log
