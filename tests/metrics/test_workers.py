"""Multi-worker servers found with no setting: real gunicorn and uvicorn, workers killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kitobs.errors import ConfigError
from kitobs.metrics import _workers
from tests.support import servers

_APP = textwrap.dedent(
    """
    import os

    from kitobs import Kit

    kit = Kit.from_config()
    served = kit.metrics.counter("served", help="Requests served.", labels=("path",))

    routes_wsgi = kit.metrics.wsgi_routes()
    routes_asgi = kit.metrics.asgi_routes()
    latency = kit.metrics.histogram("latency", help="Latency.", unit="seconds")

    def app(environ, start_response):
        if environ["PATH_INFO"] in routes_wsgi:
            return routes_wsgi[environ["PATH_INFO"]](environ, start_response)
        latency.observe(0.25)
        served.labels(environ["PATH_INFO"]).add()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] in routes_asgi:
            return await routes_asgi[scope["path"]](scope, receive, send)
        latency.observe(0.25)
        served.labels(scope["path"]).add()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
    """
)


def _served(text: str) -> dict[str, float]:
    return {
        s.labels["path"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "served_total"
    }


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(url)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KITOBS_") and k != "SERVER_SOFTWARE"
    } | {
        "KITOBS_METRICS_BACKEND": "prometheus",
        "KITOBS_METRICS_PROCESS_METRICS": "false",
        "KITOBS_TRACING_EXPORTER": "none",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        **extra,
    }


def _load(base: str, want_pids: int, kill_at: int = 10) -> tuple[int, set[bytes]]:
    """Requests to /work until *want_pids* workers have served (recycled ones included); after
    request *kill_at*, the worker that served it is SIGKILLed. Gives (requests served, pids)."""
    served, pids = 0, set()
    for _ in range(1000):
        try:
            pid = _get(f"{base}/work")
        except OSError:  # a worker leaving closed the connection unanswered: not served
            continue
        served += 1
        pids.add(pid)
        if served == kill_at:
            os.kill(int(pid), signal.SIGKILL)  # no exit hooks run: as a crash or the OOM killer
            _wait_dead(int(pid))  # a dying worker may still accept the next connection
        if served > kill_at and len(pids) >= want_pids:
            break
    assert len(pids) >= want_pids  # workers were recycled and one was killed along the way
    return served, pids


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return
        if stat_line[stat_line.rfind(b")") + 2 :].startswith(b"Z"):
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} still alive after SIGKILL")


def _check_totals(urls: list[str], n: int) -> None:
    for url in urls:
        scrapes = 0
        for _ in range(40):  # several scrapes: they land on different workers
            try:
                text = _get(url).decode()
            except OSError:  # reset by a worker leaving as it arrived: Prometheus tries again
                continue
            assert _served(text) == {"/work": n, "/warmup": 1}, url
            scrapes += 1
            if scrapes == 8:
                break
        assert scrapes == 8, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("worker", "preload"),
    [
        ("sync", False),
        ("sync", True),
        ("gthread", False),
        ("gthread", True),
        ("uvicorn.workers.UvicornWorker", False),
    ],
    ids=["sync", "sync-preload", "gthread", "gthread-preload", "asgi"],
)
def test_gunicorn_workers_report_exact_totals_with_no_setting(
    tmp_path: Path, worker: str, preload: bool
) -> None:
    (tmp_path / "wapp.py").write_text(_APP)
    (tmp_path / "run").mkdir(mode=0o700)
    port, listen = servers.free_port(), servers.free_port()
    env = _env(tmp_path, KITOBS_METRICS_PROMETHEUS_LISTEN=f"127.0.0.1:{listen}")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", worker]
    cmd += ["--max-requests", "15", "--max-requests-jitter", "0", "--log-level", "warning"]
    cmd += ["--bind", f"127.0.0.1:{port}"]
    if worker == "gthread":
        cmd += ["--threads", "2"]
    if preload:
        cmd.append("--preload")
    target = "wapp:asgi" if "Uvicorn" in worker else "wapp:app"
    proc = subprocess.Popen([*cmd, target], cwd=tmp_path, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/warmup", proc)
        served, _ = _load(base, want_pids=4 + 3)
        # The app's own /metrics, and the configured listen address every worker shares.
        _check_totals([f"{base}/metrics", f"http://127.0.0.1:{listen}/metrics"], served)
        assert proc.poll() is None  # no worker failed to boot on a taken listen address
        dirs = list((tmp_path / "run" / f"kitobs-metrics-{os.getuid()}").iterdir())
        assert [d.name.split("-")[:2] for d in dirs] == [["gunicorn", str(proc.pid)]]
        assert stat.S_IMODE(dirs[0].stat().st_mode) == 0o700
        assert len(list(dirs[0].glob("*.kitobs"))) <= 4 + 1 + int(preload)
    finally:
        _stop(proc)


@pytest.mark.slow
def test_uvicorn_workers_report_exact_totals_with_no_setting(tmp_path: Path) -> None:
    (tmp_path / "wapp.py").write_text(_APP)
    (tmp_path / "run").mkdir(mode=0o700)
    port = servers.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--workers", "3", "--limit-max-requests", "25"]
    cmd += ["--port", str(port), "--log-level", "warning", "wapp:asgi"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path))
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/warmup", proc)
        served, _ = _load(base, want_pids=3 + 2)
        deadline = time.monotonic() + 30
        while True:  # the supervisor replaces dead workers on its own schedule
            try:
                _check_totals([f"{base}/metrics"], served)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        dirs = list((tmp_path / "run" / f"kitobs-metrics-{os.getuid()}").iterdir())
        assert [d.name.split("-")[:2] for d in dirs] == [["uvicorn", str(proc.pid)]]
    finally:
        _stop(proc)


def _check_debug_vars(url: str, n: int, *, answering: int = 1) -> None:
    """Any worker's /debug/vars shows the exact totals: counters, and histogram count and sum
    (the requests were served by several workers, so no one worker's own numbers are these).
    *answering*: how many workers at least must have answered."""

    def scrape(_: int) -> dict[str, Any] | None:
        try:
            page: dict[str, Any] = json.loads(_get(url))
        except OSError:  # reset by a worker leaving as it arrived
            return None
        return page

    pages: list[dict[str, Any]] = []
    with ThreadPoolExecutor(4) as pool:  # at once, so that several workers answer
        # Up to 30 rounds: a worker gunicorn is restarting (--max-requests) answers no scrape.
        for _ in range(30):
            pages += [p for p in pool.map(scrape, range(4)) if p is not None]
            if len(pages) >= 12 and len({p["process"]["pid"] for p in pages}) >= answering:
                break
    assert len(pages) >= 12
    assert len({p["process"]["pid"] for p in pages}) >= answering
    for page in pages:
        series = page["metrics"]["served_total"]["series"]
        served = {s["labels"]["path"]: s["value"] for s in series}
        assert served == {"/work": n, "/warmup": 1}, page["process"]["pid"]
        [latency] = page["metrics"]["latency_seconds"]["series"]
        assert (latency["count"], latency["sum"]) == (n + 1, 0.25 * (n + 1))
        assert latency["quantiles"]["0.5"] == pytest.approx(0.25, rel=0.005)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("worker", "preload"),
    [("sync", False), ("gthread", True), ("uvicorn.workers.UvicornWorker", False)],
    ids=["sync", "gthread-preload", "asgi"],
)
def test_gunicorn_debug_vars_report_exact_totals_with_no_setting(
    tmp_path: Path, worker: str, preload: bool
) -> None:
    (tmp_path / "wapp.py").write_text(_APP)
    (tmp_path / "run").mkdir(mode=0o700)
    port = servers.free_port()
    env = _env(tmp_path, KITOBS_METRICS_BACKEND="prometheus,expvar")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", worker]
    cmd += ["--max-requests", "15", "--max-requests-jitter", "0", "--log-level", "warning"]
    cmd += ["--bind", f"127.0.0.1:{port}"]
    if worker == "gthread":
        cmd += ["--threads", "2"]
    if preload:
        cmd.append("--preload")
    target = "wapp:asgi" if "Uvicorn" in worker else "wapp:app"
    proc = subprocess.Popen([*cmd, target], cwd=tmp_path, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/warmup", proc)
        served, _ = _load(base, want_pids=4 + 3)
        _check_debug_vars(f"{base}/debug/vars", served, answering=2)
        _check_totals([f"{base}/metrics"], served)  # beside it, /metrics counts no request twice
    finally:
        _stop(proc)


@pytest.mark.slow
def test_uvicorn_workers_debug_vars_report_exact_totals_with_no_setting(tmp_path: Path) -> None:
    (tmp_path / "wapp.py").write_text(_APP)
    (tmp_path / "run").mkdir(mode=0o700)
    port = servers.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--workers", "3", "--limit-max-requests", "25"]
    cmd += ["--port", str(port), "--log-level", "warning", "wapp:asgi"]
    env = _env(tmp_path, KITOBS_METRICS_BACKEND="expvar")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/warmup", proc)
        served, _ = _load(base, want_pids=3 + 2)
        deadline = time.monotonic() + 30
        while True:  # the supervisor replaces dead workers on its own schedule
            try:
                _check_debug_vars(f"{base}/debug/vars", served)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        _stop(proc)


# --- detection and the shared directory, in this process -------------------------------------


def test_a_process_on_its_own_is_not_a_worker() -> None:
    assert _workers.detect({}) is None


def test_a_gunicorn_worker_names_its_arbiter_by_pid_and_start_time() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fork, as gunicorn's arbiter forks a worker: the same command line
        try:
            os.write(w, repr(_workers.detect({"SERVER_SOFTWARE": "gunicorn/23.0.0"})).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    got = os.read(r, 4096).decode()
    os.close(r)
    os.close(w)
    assert got == repr(_workers.Detected("gunicorn", os.getpid(), _workers.start_time(os.getpid())))
    # The arbiter itself, loading the application before it forks (--preload).
    found = _workers.detect({"SERVER_SOFTWARE": "gunicorn/23.0.0"})
    assert found == _workers.Detected("gunicorn", os.getpid(), _workers.start_time(os.getpid()))


def test_the_shared_directory_is_private_and_refuses_anothers(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    me = _workers.Detected("gunicorn", os.getpid(), _workers.start_time(os.getpid()) or 0)
    d = _workers.shared_directory(me, env)
    assert d.parent == tmp_path / f"kitobs-metrics-{os.getuid()}"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.parent.stat().st_mode) == 0o700
    assert _workers.shared_directory(me, env) == d  # every worker joins the same one
    d.parent.chmod(0o755)
    with pytest.raises(ConfigError, match="mode 755"):
        _workers.shared_directory(me, env)
    d.parent.chmod(0o700)
    if os.getuid() == 0:
        os.chown(d.parent, 12345, -1)
        with pytest.raises(ConfigError, match="owned by uid 12345"):
            _workers.shared_directory(me, env)
        os.chown(d.parent, 0, -1)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    d.parent.rename(tmp_path / "moved")
    (tmp_path / f"kitobs-metrics-{os.getuid()}").symlink_to(other)
    with pytest.raises(ConfigError, match="not a directory"):
        _workers.shared_directory(me, env)


def test_directories_of_exited_masters_are_removed(tmp_path: Path) -> None:
    from kitobs.metrics import multiprocess

    root = tmp_path / f"kitobs-metrics-{os.getuid()}"
    root.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = root / f"gunicorn-{proc.pid}-{_workers.start_time(os.getpid())}"
    reused = root / f"gunicorn-{os.getpid()}-1"  # a live pid, but a later process than named
    alive = root / f"uvicorn-{os.getpid()}-{_workers.start_time(os.getpid())}"
    held = root / f"gunicorn-{proc.pid}-7"  # master gone, but a live process writes here
    for d in (gone, reused, alive, held):
        d.mkdir(mode=0o700)
        (d / "archive.json").write_text("{}")
    writer = multiprocess.Provider(held)
    me = _workers.Detected("uvicorn", os.getpid(), _workers.start_time(os.getpid()) or 0)
    assert _workers.shared_directory(me, {"XDG_RUNTIME_DIR": str(tmp_path)}) == alive
    assert sorted(p.name for p in root.iterdir()) == sorted([alive.name, held.name])
    writer.close()
    _workers.remove_stale(root)
    assert [p.name for p in root.iterdir()] == [alive.name]
