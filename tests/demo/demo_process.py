"""Run ``kitobs demo`` as a real process for tests, the way a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["Demo", "start_demo", "stop_demo", "wait_for"]


class Demo:
    def __init__(self, proc: subprocess.Popen[str], url: str, stderr: Path) -> None:
        self.proc = proc
        self.url = url
        self.stderr = stderr

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read()

    def log_lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()


def start_demo(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> Demo:
    port = port or free_port()
    stderr = tmp_path / "stderr.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KITOBS_")}
    full_env.update(env or {})
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kitobs", "demo", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=full_env,
            cwd=tmp_path,
        )
    assert proc.stdout is not None
    banner = proc.stdout.readline()  # blocks until the banner's first line (or exit)
    assert f"127.0.0.1:{port}" in banner, (banner, stderr.read_text())
    return Demo(proc, f"http://127.0.0.1:{port}", stderr)


def stop_demo(demo: Demo) -> int:
    """stop_demo sends SIGTERM and returns the exit status."""
    if demo.proc.poll() is None:
        demo.proc.terminate()
    try:
        status = demo.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        demo.proc.kill()
        status = demo.proc.wait(timeout=90)
    if demo.proc.stdout is not None:
        demo.proc.stdout.close()
    return status


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    """wait_for polls *predicate* until it is true, failing after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
