"""Pre-fork multi-process metrics: forked children, and real gunicorn workers (and Prometheus)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
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


# --- exemplars ---------------------------------------------------------------------------------


def _exemplars(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """(sample name, labels) -> Exemplar, read by prometheus_client's OpenMetrics parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.exemplar
        for f in openmetrics_families(text)
        for s in f.samples
        if s.exemplar is not None
    }


def test_exemplars_of_live_and_exited_processes_latest_per_bucket(tmp_path: Path) -> None:
    ids = ["0" * 31 + "1", "0" * 15 + "a"]
    p = multiprocess.Provider(tmp_path, exemplar_context=lambda: (ids[0], ids[1]))
    h = p.histogram("work", help="Work.", unit="seconds", labels=("who",), buckets=(1.0, 5.0))
    h.labels("x").observe(0.5)  # le=1.0, soon replaced by the child's later one
    h.labels("x").observe(4.0)  # le=5.0, stays the parent's
    pid = os.fork()
    if pid == 0:  # a worker that serves, then exits without closing (its file gets archived)
        try:
            ids[0] = "0" * 31 + "2"
            h.labels("x").observe(0.25)
            h.labels("x").observe(7.0)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    text = p.exposition(openmetrics=True).decode()
    got = _exemplars(text)
    first = (("le", "1.0"), ("who", "x"))
    assert got[("work_seconds_bucket", first)].labels == {
        "trace_id": "0" * 31 + "2",
        "span_id": "0" * 15 + "a",
    }
    assert got[("work_seconds_bucket", first)].value == 0.25
    assert (
        got[("work_seconds_bucket", (("le", "5.0"), ("who", "x")))].labels["trace_id"]
        == "0" * 31 + "1"
    )
    assert got[("work_seconds_bucket", (("le", "+Inf"), ("who", "x")))].value == 7.0
    assert len(list(tmp_path.glob("*.kitobs"))) == 1  # the child's file went into the archive
    # The text format has no exemplars; counts are those of both processes.
    assert " # {" not in p.exposition().decode()
    assert _samples(p.exposition().decode())[("work_seconds_count", (("who", "x"),))] == 4
    p.close()
    # A new reader (as after a restart of every worker) still shows the archived exemplars.
    reader = multiprocess.Provider(tmp_path, exemplar_context=lambda: None)
    reader.histogram("work", help="Work.", unit="seconds", labels=("who",), buckets=(1.0, 5.0))
    again = _exemplars(reader.exposition(openmetrics=True).decode())
    assert again[("work_seconds_bucket", first)].value == 0.25
    assert again[("work_seconds_bucket", (("le", "5.0"), ("who", "x")))].value == 4.0
    reader.close()


def test_exemplar_half_written_is_not_shown(tmp_path: Path) -> None:
    p = multiprocess.Provider(tmp_path, exemplar_context=lambda: ("ab" * 16, "cd" * 8))
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(1.0,))
    h.observe(0.5)
    assert _exemplars(p.exposition(openmetrics=True).decode())
    # As a scrape would see a record whose writer is midway: the body no longer matches its
    # checksum (here one byte of the span id, as if that byte were still the old one).
    slot = h.default()
    off = slot._exemplar_offsets[0]
    mm = p._file.mm
    at = mm.find(b"cdcd", off)
    assert off < at < off + 120
    mm[at : at + 1] = b"x"
    text = p.exposition(openmetrics=True).decode()
    assert _exemplars(text) == {}
    assert _samples(text)[("work_seconds_bucket", (("le", "1.0"),))] == 1
    p.close()


@pytest.mark.parametrize(
    "context",
    [
        lambda: ("a" * 65, "b" * 16),  # longer than the record holds
        lambda: ("a" * 32, "b" * 33),
        lambda: (1, 2),  # not strings
        lambda: 1 / 0,  # raises
        lambda: None,  # outside a sampled span
    ],
    ids=["long-trace", "long-span", "not-strings", "raises", "none"],
)
def test_exemplar_context_trouble_never_loses_the_observation(
    tmp_path: Path, context: Callable[[], Any]
) -> None:
    p = multiprocess.Provider(tmp_path, exemplar_context=context)
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(1.0,))
    h.observe(0.5)
    h.observe(2.0)
    text = p.exposition(openmetrics=True).decode()
    assert _exemplars(text) == {}
    got = _samples(p.exposition().decode())
    assert got[("work_seconds_bucket", (("le", "1.0"),))] == 1
    assert got[("work_seconds_count", ())] == 2
    p.close()


def test_exemplars_survive_a_fork_before_any_request(tmp_path: Path) -> None:
    """gunicorn --preload: series built in the parent get the child's own exemplar records."""
    p = multiprocess.Provider(tmp_path, exemplar_context=lambda: ("e" * 32, "f" * 16))
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(1.0,))
    h.observe(2.0)  # the parent's, in +Inf
    observed_r, observed_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            h.observe(0.5)
            os.write(observed_w, b"1")
            os.read(done_r, 1)  # stay alive (file not archived) until the parent has read
        finally:
            os._exit(0)
    os.read(observed_r, 1)
    got = _exemplars(p.exposition(openmetrics=True).decode())
    os.write(done_w, b"1")
    os.waitpid(pid, 0)
    for fd in (observed_r, observed_w, done_r, done_w):
        os.close(fd)
    assert got[("work_seconds_bucket", (("le", "1.0"),))].value == 0.5
    assert got[("work_seconds_bucket", (("le", "+Inf"),))].value == 2.0
    p.close()


_TRACED_APP = textwrap.dedent(
    """
    import os

    from kitobs.config import load
    from kitobs.metrics.config import provider_from_settings
    from kitobs.tracing import Tracer, current_sampled_ids

    provider = provider_from_settings(load(search=False), exemplar_context=current_sampled_ids)
    latency = provider.histogram(
        "kitobs_mp_work", help="Work.", unit="seconds", labels=("run",), buckets=(0.1, 1.0)
    )
    metrics_app = provider.wsgi_routes()["/metrics"]
    tracer = Tracer()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        run, value = environ["QUERY_STRING"].split("&")
        with tracer.span("work") as span:
            latency.labels(run).observe(float(value))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{span.hex_ids()[0]} {os.getpid()}".encode()]
    """
)


@pytest.mark.slow
@pytest.mark.integration
def test_gunicorn_workers_exemplars_reach_prometheus(
    tmp_path: Path, app_port: int, prometheus_url: str
) -> None:
    """Real Prometheus (exemplar storage on) scrapes 2 gunicorn workers, some since replaced."""
    (tmp_path / "tracedapp.py").write_text(_TRACED_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITOBS_")} | {
        "KITOBS_METRICS_BACKEND": "prometheus",
        "KITOBS_METRICS_PROMETHEUS_MULTIPROCESS_DIR": str(tmp_path / "metrics"),
        "KITOBS_METRICS_PROCESS_METRICS": "false",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "2", "--max-requests", "5"]
    cmd += ["--max-requests-jitter", "0", "--bind", f"127.0.0.1:{app_port}"]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning", "tracedapp:app"], cwd=tmp_path, env=env
    )
    run = uuid.uuid4().hex[:12]
    try:
        base = f"http://127.0.0.1:{app_port}"
        _wait_up(f"{base}/metrics", proc)
        served: dict[str, str] = {}  # trace id -> pid
        for i in range(12):
            value = "0.05" if i < 11 else "0.5"  # the last one alone in le=1.0
            with urllib.request.urlopen(f"{base}/work?{run}&{value}", timeout=5) as resp:
                trace, pid = resp.read().decode().split()
            served[trace] = pid
        assert len(set(served.values())) > 2  # workers were replaced along the way
        last = trace
        sel = f'kitobs_mp_work_seconds_bucket{{run="{run}"}}'
        found = servers.wait_for_exemplars(
            prometheus_url, sel, lambda got: any(e["labels"]["trace_id"] == last for e in got)
        )
        assert {e["labels"]["trace_id"] for e in found} <= set(served)
        by_le = {e["series"]["le"]: e for e in found if e["labels"]["trace_id"] == last}
        assert float(by_le["1.0"]["value"]) == 0.5
        assert len(by_le["1.0"]["labels"]["span_id"]) == 16
        counts = servers.wait_for_prometheus(
            prometheus_url,
            f'kitobs_mp_work_seconds_count{{run="{run}"}}',
            lambda r: [float(x["value"][1]) for x in r] == [12],
        )
        assert counts
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_scrapes_during_exemplar_writes_never_show_a_torn_record(tmp_path: Path) -> None:
    """A worker rewrites one bucket's exemplar as fast as it can while the parent scrapes.

    Each exemplar's value is derived from its trace id, so a record mixing two writes (ids of one,
    value of another) would show as a mismatch.
    """
    ids = ["0" * 32, "0" * 16]
    p = multiprocess.Provider(tmp_path, exemplar_context=lambda: (ids[0], ids[1]))
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(1e9,))
    h.observe(0.0)  # the series exists before the fork
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.set_blocking(stop_r, False)
            n = 0
            while True:
                n += 1
                ids[0] = f"{n:032x}"
                ids[1] = f"{n:016x}"[::-1]
                h.observe(float(n))
                if n % 64 == 0:
                    try:
                        if os.read(stop_r, 1):
                            break
                    except BlockingIOError:
                        pass
        finally:
            os._exit(0)
    seen = set()
    try:
        for _ in range(300):
            for ex in _exemplars(p.exposition(openmetrics=True).decode()).values():
                n = int(ex.labels["trace_id"], 16)
                assert ex.labels["span_id"] == f"{n:016x}"[::-1], ex
                assert ex.value == float(n), ex
                seen.add(n)
    finally:
        os.write(stop_w, b"1")
        os.waitpid(pid, 0)
        os.close(stop_r)
        os.close(stop_w)
    assert len(seen) >= 3  # the scrapes did catch the writer at work
    p.close()


def test_scrapes_stay_exact_as_files_grow_and_change(tmp_path: Path) -> None:
    """A scrape reuses where each file's entries are; new series and new values still show."""
    p = multiprocess.Provider(tmp_path)
    jobs = p.counter("jobs", help="Jobs.", labels=("n",))
    done_r, done_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a live worker adding series between the parent's scrapes
        try:
            for step in range(3):
                os.read(go_r, 1)
                for i in range(200 * (step + 1)):  # earlier series change, later ones are new
                    jobs.labels(str(i)).add(1)
                os.write(done_w, b"1")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    want: dict[str, float] = {}
    for step in range(3):
        os.write(go_w, b"1")
        os.read(done_r, 1)
        for i in range(200 * (step + 1)):
            want[str(i)] = want.get(str(i), 0.0) + 1
        jobs.labels("parent").add(step + 1)
        want["parent"] = sum(range(1, step + 2))
        got = _samples(p.exposition().decode())
        assert {dict(k[1])["n"]: v for k, v in got.items() if k[0] == "jobs_total"} == want
    os.write(go_w, b"1")
    os.waitpid(pid, 0)
    got = _samples(p.exposition().decode())  # the child's file is now archived
    assert {dict(k[1])["n"]: v for k, v in got.items() if k[0] == "jobs_total"} == want
    for fd in (done_r, done_w, go_r, go_w):
        os.close(fd)
    p.close()


def test_a_closed_provider_makes_no_file_in_a_forked_child(tmp_path: Path) -> None:
    p = multiprocess.Provider(tmp_path / "old")
    p.close()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert [f.name.split("-")[0] for f in (tmp_path / "old").glob("*.kitobs")] == [str(os.getpid())]


def _io() -> dict[str, int]:
    """This process's I/O counters from the kernel (bytes read, read calls)."""
    lines = Path("/proc/self/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


@pytest.mark.slow
def test_worker_churn_keeps_files_archive_and_scrape_cost_flat(tmp_path: Path) -> None:
    """1,200 short-lived workers (a day of ``--max-requests`` recycling), each recording the same
    series and leaving as a recycled worker does (close), as one that crashes (exit without
    close) or as one killed: files, the archive and what a scrape reads stay flat."""
    import signal

    from kitobs.metrics import expvar

    # Four readings, 300 workers apart, show whether files, archive and scrape cost grow.
    workers, batch = 1200, 300
    prom = multiprocess.Provider(tmp_path)
    page = expvar.Provider(directory=tmp_path / "expvar")
    for p in (prom, page):  # declared here too: the gauge's series shows at its live total
        p.gauge("inflight", help="In flight.")
    readings: list[tuple[int, int, int, int, int]] = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a child
            try:
                for p in (
                    multiprocess.Provider(tmp_path),
                    expvar.Provider(directory=tmp_path / "expvar"),
                ):
                    p.counter("served", help="Requests.", labels=("path",)).labels("/work").add()
                    h = p.histogram("latency", help="Latency.", unit="seconds")
                    h.observe(0.25)
                    p.gauge("inflight", help="In flight.").set(1)
                    if i % 3 == 0:
                        p.close()
                if i % 3 == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if (i + 1) % batch == 0:
            before = _io()
            text = prom.exposition()
            snapshot = page.snapshot()
            after = _io()
            files = sum(1 for _ in tmp_path.rglob("*"))
            archive = sum(a.stat().st_size for a in tmp_path.rglob("archive.json"))
            read = after["rchar"] - before["rchar"]
            calls = after["syscr"] - before["syscr"]
            readings.append((i + 1, files, archive, read, calls))
    samples = _samples(text.decode())
    assert samples[("served_total", (("path", "/work"),))] == workers
    assert samples[("latency_seconds_count", ())] == workers
    assert samples[("latency_seconds_sum", ())] == 0.25 * workers
    assert samples[("inflight", ())] == 0  # gauges of exited workers are dropped
    metrics = snapshot["metrics"]
    assert metrics["served_total"]["series"][0]["value"] == workers
    assert metrics["inflight"]["series"][0]["value"] == 0
    [latency] = metrics["latency_seconds"]["series"]
    assert (latency["count"], latency["sum"]) == (workers, 0.25 * workers)
    assert latency["quantiles"]["0.99"] == pytest.approx(0.25, rel=0.005)
    print(readings)
    _, files0, archive0, read0, calls0 = readings[0]
    for n, files, archive, read, calls in readings[1:]:
        # Bounded by what the first batch gave, whatever the number of workers gone: values
        # in the archive only gain digits.
        assert files <= files0, (n, readings)
        assert archive <= archive0 + 256, (n, readings)
        assert read <= read0 + 1024, (n, readings)
        assert calls <= calls0, (n, readings)
    page.close()
    prom.close()
