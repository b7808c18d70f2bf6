"""Every exit flushes, within one budget: real processes, real signals, real servers.

Each test runs `tests.support.exit_app` in a subprocess configured through ``KITOBS_*`` variables:
spans go to a Zipkin capture receiver, statsd lines to a UDP socket the test binds, pushes to the
real Pushgateway (``scripts/services up``), log lines to a buffered file. Periodic flushes are set
an hour apart, so whatever arrives was sent by the exit flush.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.exit_app import LINGER
from tests.support.zipkin import Receiver

REPO = Path(__file__).resolve().parents[1]
HOUR = "3600"


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def job(pushgateway_addr: str) -> Iterator[str]:
    name = f"exit-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        servers.pushgateway_delete(pushgateway_addr, name)


def plain_env() -> dict[str, str]:
    """plain_env is this environment without KITOBS_* settings or coverage's subprocess hook.

    Coverage measures subprocesses (``patch = ["subprocess"]``) with a SIGTERM handler of its
    own (``sigterm = true``), and kitobs leaves an existing handler alone; a child that must
    start with SIGTERM's default disposition, as a real service does, is not measured.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(("KITOBS_", "COVERAGE_"))}


def kitobs_env(
    receiver_url: str, statsd: str, pushgateway: str, job: str, log: Path, **extra: str
) -> dict[str, str]:
    env = plain_env()
    env.update(
        PYTHONPATH=str(REPO),
        KITOBS_SERVICE_NAME="exit-app",
        KITOBS_TRACING_EXPORTER="zipkin",
        KITOBS_TRACING_ZIPKIN_ENDPOINT=receiver_url,
        KITOBS_TRACING_FLUSH_INTERVAL=HOUR,
        KITOBS_METRICS_BACKEND="statsd,pushgateway",
        KITOBS_METRICS_PROCESS_METRICS="false",
        KITOBS_METRICS_STATSD_ADDRESS=statsd,
        KITOBS_METRICS_STATSD_FLUSH_INTERVAL=HOUR,
        KITOBS_METRICS_PUSHGATEWAY_ADDRESS=pushgateway,
        KITOBS_METRICS_PUSHGATEWAY_JOB=job,
        KITOBS_LOG_OUTPUT=str(log),
        KITOBS_LOG_BUFFERED="true",
    )
    env.update(extra)
    return env


def received(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            data += sock.recv(65536) + b"\n"
        except TimeoutError:
            return data


def addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def work_spans(receiver: Receiver, count: int) -> list[str]:
    return [s["name"] for s in receiver.wait_for(count, timeout=5) if s["name"] == "work"]


def pushed_calls(pushgateway: str, job: str) -> float:
    for group in servers.pushgateway_metrics(pushgateway):
        if group["labels"].get("job") == job:
            family = group.get("kitobs_endpoint_duration_seconds", {})
            return sum(float(m.get("count", 0)) for m in family.get("metrics", []))
    return 0.0


def assert_everything_arrived(
    receiver: Receiver, udp: socket.socket, pushgateway: str, job: str, log: Path
) -> None:
    assert work_spans(receiver, 5) == ["work"] * 5
    lines = received(udp)
    assert lines.count(b"kitobs.endpoint.duration.work.") == 5, lines
    assert pushed_calls(pushgateway, job) == 5
    assert "five calls done" in log.read_text()


def run_app(mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.exit_app", mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_normal_exit_flushes_spans_statsd_push_and_log(
    zipkin_receiver: Receiver,
    udp: socket.socket,
    pushgateway_addr: str,
    job: str,
    tmp_path: Path,
) -> None:
    statsd = addr(udp)
    log = tmp_path / "app.log"
    env = kitobs_env(zipkin_receiver.url, statsd, pushgateway_addr, job, log)
    proc = run_app("exit", env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_everything_arrived(zipkin_receiver, udp, pushgateway_addr, job, log)
    assert "exit budget" not in err  # nothing was dropped, so nothing is reported


def test_sigterm_without_a_handler_flushes_then_dies_of_sigterm(
    zipkin_receiver: Receiver,
    udp: socket.socket,
    pushgateway_addr: str,
    job: str,
    tmp_path: Path,
) -> None:
    statsd = addr(udp)
    log = tmp_path / "app.log"
    env = kitobs_env(zipkin_receiver.url, statsd, pushgateway_addr, job, log)
    proc = run_app("wait", env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err  # still "killed by SIGTERM"
    assert_everything_arrived(zipkin_receiver, udp, pushgateway_addr, job, log)


class Server:
    """Server runs exit_app under gunicorn or uvicorn on a free port, e.g. ``Server("uvicorn")``."""

    def __init__(self, runner: str, env: dict[str, str]) -> None:
        self.port = servers.free_port()
        if runner == "gunicorn":
            cmd = [
                sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "2",
                "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "20",
                "--log-level", "warning", "tests.support.exit_app:wsgi",
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "tests.support.exit_app:asgi",
            ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def get(self, path: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    return str(r.read().decode())
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.mark.parametrize("runner", ["gunicorn", "uvicorn"])
def test_sigterm_under_a_server_flushes_what_the_worker_held(
    runner: str,
    zipkin_receiver: Receiver,
    udp: socket.socket,
    pushgateway_addr: str,
    job: str,
    tmp_path: Path,
) -> None:
    statsd = addr(udp)
    log = tmp_path / "app.log"
    env = kitobs_env(zipkin_receiver.url, statsd, pushgateway_addr, job, log)
    server = Server(runner, env)
    try:
        for _ in range(5):
            assert server.get("/work") == "2"
        code, out = server.terminate()
    finally:
        server.kill()
    assert code in (0, -signal.SIGTERM), out
    assert work_spans(zipkin_receiver, 5) == ["work"] * 5, out
    lines = received(udp)
    assert lines.count(b"kitobs.endpoint.duration.work.") == 5, (lines, out)
    assert pushed_calls(pushgateway_addr, job) == 5, out


def test_hanging_collector_statsd_and_pushgateway_cannot_hold_the_exit_past_the_budget(
    tmp_path: Path,
) -> None:
    collector = Receiver(hang=True)  # reads each POST, never answers
    # statsd over TCP to a listener whose one-slot accept queue the test fills: connecting hangs.
    statsd = socket.socket()
    statsd.bind(("127.0.0.1", 0))
    statsd.listen(0)
    filler = socket.create_connection(statsd.getsockname())
    # A "Pushgateway" that takes the connection (the kernel does) and never answers.
    pushgateway = socket.socket()
    pushgateway.bind(("127.0.0.1", 0))
    pushgateway.listen(16)
    push_url = f"http://{addr(pushgateway)}/"
    try:
        env = kitobs_env(
            collector.url,
            addr(statsd),
            push_url,
            "hang",
            tmp_path / "app.log",
            KITOBS_KIT_EXIT_TIMEOUT="1",
            KITOBS_METRICS_STATSD_TRANSPORT="tcp",
            KITOBS_METRICS_STATSD_FLUSH_INTERVAL="0.05",  # lines queue for the stuck connection
            KITOBS_TRACING_FLUSH_INTERVAL="0.05",  # the batch is stuck in its POST at exit
            KITOBS_TRACING_ZIPKIN_TIMEOUT="60",
            KITOBS_TRACING_SHUTDOWN_TIMEOUT="60",
            KITOBS_METRICS_PUSHGATEWAY_TIMEOUT="60",
        )
        proc = run_app("linger", env)  # prints ready, then returns after LINGER seconds
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        began = time.monotonic()
        _, err = proc.communicate(timeout=240)
        took = time.monotonic() - began
    finally:
        collector.close()
        filler.close()
        statsd.close()
        pushgateway.close()
    # Each part alone would hold the exit for a minute; the budget is 1 s for all of them.
    assert proc.returncode == 0, err
    assert took < LINGER + 1 + 4, (took, err)
    report = [line for line in err.splitlines() if "exit budget of 1 s ran out" in line]
    assert len(report) == 1, err
    assert "5 spans" in report[0]
    assert "statsd line" in report[0]
    assert f"push to {push_url.rstrip('/')}/metrics/job/hang" in report[0]


def run_snippet(code: str) -> subprocess.CompletedProcess[str]:
    env = plain_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_handler_the_application_installed_is_left_alone() -> None:
    done = run_snippet(
        "import signal\n"
        "from kitobs.kit import Kit\n"
        "def mine(signum, frame): print('mine ran', flush=True)\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "Kit.from_config(path=None, overrides={'metrics.backend': ['discard']}).close()\n"
        "print(signal.getsignal(signal.SIGTERM) is mine)\n"
        "signal.raise_signal(signal.SIGTERM)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "mine", "ran"]


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    done = run_snippet(
        "import signal, threading\n"
        "from kitobs.kit import Kit\n"
        "t = threading.Thread(target=lambda: Kit.from_config(path=None, "
        "overrides={'metrics.backend': ['discard']}).close())\n"
        "t.start(); t.join()\n"
        "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_a_failing_part_is_reported_and_the_others_still_flush() -> None:
    done = run_snippet(
        "import os\n"
        "from kitobs import _exit\n"
        "class Part:\n"
        "    def __init__(self, name, fail): self.name, self.fail = name, fail\n"
        "    def _flush_at_exit(self, deadline):\n"
        "        if self.fail: raise RuntimeError('broken')\n"
        "        os.write(1, f'{self.name} flushed\\n'.encode()); return ''\n"
        "parts = [Part('a', False), Part('b', True), Part('c', False)]\n"
        "for p in parts: _exit.at_exit(p)\n"
        "log = Part('log', False); _exit.logs_at_exit(log)\n"
        "gone = Part('gone', False); _exit.at_exit(gone); del gone\n"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()[:2]) == ["a flushed", "c flushed"]
    assert done.stdout.splitlines()[2:] == ["log flushed"]  # logs after the others
    assert "flush failed: RuntimeError('broken')" in done.stderr  # named in the exit report


def test_the_exit_budget_is_a_kit_setting_with_its_variable() -> None:
    from kitobs.config import load
    from kitobs.errors import ConfigError

    assert load(path=None, env={}, search=False).kit.exit_timeout == 3.0
    settings = load(path=None, env={"KITOBS_KIT_EXIT_TIMEOUT": "1.5"}, search=False)
    assert settings.kit.exit_timeout == 1.5
    with pytest.raises(ConfigError, match=r"kit\.exit_timeout"):
        load(path=None, env={"KITOBS_KIT_EXIT_TIMEOUT": "-1"}, search=False)
