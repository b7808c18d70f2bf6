"""Pre-fork multi-process metrics: forked children and a real gunicorn with 4 workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kitobs.metrics import multiprocess
from tests.support import servers


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_forked_children_that_exited_still_count_and_their_files_go(tmp_path: Path) -> None:
    p = multiprocess.Provider(tmp_path)
    jobs = p.counter("jobs", help="Jobs.", labels=("who",))
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(1.0,))
    active = p.gauge("active", help="Active.")
    jobs.labels("parent").add(3)
    active.set(2)
    pids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:  # the child: a fresh file at zero, then exit without closing (as a crash)
            try:
                jobs.labels("child").add(10)
                h.observe(0.5 + i)
                active.set(100)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    got = _samples(p.exposition().decode())
    assert got[("jobs_total", (("who", "parent"),))] == 3
    assert got[("jobs_total", (("who", "child"),))] == 30
    assert got[("work_seconds_count", ())] == 3
    assert got[("work_seconds_bucket", (("le", "1.0"),))] == 1
    assert got[("work_seconds_sum", ())] == 0.5 + 1.5 + 2.5
    assert got[("active", ())] == 2  # gauges of exited processes are dropped
    assert len(list(tmp_path.glob("*.kitobs"))) == 1  # only the parent's file is left
    p.close()
    # After close the parent's values are archived by the next reader.
    reader = multiprocess.Provider(tmp_path)
    assert _samples(reader.exposition().decode())[("jobs_total", (("who", "parent"),))] == 3
    reader.close()


_APP = textwrap.dedent(
    """
    from kitobs.config import load
    from kitobs.metrics.config import provider_from_settings

    provider = provider_from_settings(load(search=False))
    served = provider.counter("served", help="Requests served.", labels=("path",))
    metrics_app = provider.wsgi_routes()["/metrics"]

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        served.labels(environ["PATH_INFO"]).add()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(__import__("os").getpid()).encode()]
    """
)


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload"])
def test_gunicorn_four_workers_report_one_total(tmp_path: Path, preload: bool) -> None:
    (tmp_path / "mpapp.py").write_text(_APP)
    metrics_dir = tmp_path / "metrics"
    port = servers.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITOBS_")} | {
        "KITOBS_METRICS_BACKEND": "prometheus",
        "KITOBS_METRICS_PROMETHEUS_MULTIPROCESS_DIR": str(metrics_dir),
        "KITOBS_METRICS_PROCESS_METRICS": "false",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "4",
        "--max-requests",
        "7",
        "--max-requests-jitter",
        "0",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    if preload:
        cmd.append("--preload")
    proc = subprocess.Popen([*cmd, "mpapp:app"], cwd=tmp_path, env=env)
    try:
        _wait_up(f"http://127.0.0.1:{port}/warmup", proc)
        pids = set()
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=5) as resp:
                pids.add(resp.read())
        assert len(pids) > 4  # workers did exit and get replaced along the way
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            got = _samples(resp.read().decode())
        assert got[("served_total", (("path", "/work"),))] == 100
        assert got[("served_total", (("path", "/warmup"),))] == 1
        assert len(list(metrics_dir.glob("*.kitobs"))) <= 4 + 1 + int(preload)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
