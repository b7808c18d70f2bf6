"""The README's first command, run as written: the demo (in the checkout's .venv, made or reused)
shows requests at /metrics, trace ids in its log lines, and span summaries."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_exactly_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    commands = readme_commands()
    assert commands[0] == (
        "python3 -m venv .venv"
        ' && .venv/bin/pip install -e ".[all]"'
        " && .venv/bin/kitobs demo --load 5"
    )
    assert commands[1] == "scripts/test"
    # The two commands come before any other code block or section.
    first_section = text.find("\n## ")
    assert text.find(commands[1]) < first_section
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("\nscripts/test")


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, ConnectionError):
        return ""


def served_requests(exposition: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("http_server_request_duration_seconds_count{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


DEMO_PORT = 8080  # the demo's embedded default, which the README's command runs on


def wait_until_free(port: int, timeout: float = 180.0) -> None:
    """wait_until_free returns once nothing is bound to 127.0.0.1:*port*, else fails naming it.

    The README's command runs on the demo's default port, so it cannot move: a second test run on
    the machine waits its turn, and a foreign server there fails the test with the reason,
    instead of the test scraping someone else's /metrics.
    """
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the demo binds
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() >= deadline:
                    pytest.fail(f"127.0.0.1:{port}, the demo's default port, stays in use")
        time.sleep(0.5)


@pytest.mark.slow
def test_readme_first_command_runs_the_demo_with_traffic(tmp_path: Path) -> None:
    command = readme_commands()[0]
    wait_until_free(DEMO_PORT)
    stderr = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITOBS_")}
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    try:
        # Generous: when .venv is new, the command installs .[all] before the demo starts.
        deadline = time.monotonic() + 240
        requests = 0.0
        log = ""
        while time.monotonic() < deadline:
            requests = served_requests(scrape(f"http://127.0.0.1:{DEMO_PORT}/metrics"))
            log = stderr.read_text(errors="replace")
            if requests >= 5 and "msg=span" in log and "kind=server" in log:
                break
            time.sleep(0.5)
        assert requests >= 5, log[-2000:]
        lines = log.splitlines()
        with_ids = [line for line in lines if re.search(r" trace_id=[0-9a-f]{32} ", line)]
        assert any("endpoint=" in line for line in with_ids), log[-2000:]
        assert any("msg=span" in line and "kind=server" in line for line in with_ids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
