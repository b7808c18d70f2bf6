"""Shared fixtures: where the real servers started by scripts/test listen.

Each fixture reads one ``KITOBSTEST_*`` variable through `tests.support.servers.require_env`, so a
test that asks for it fails in CI when the server is missing and skips, with a reason, elsewhere.

The session is confined to the repository (`tests.support.confinement`): a test that opens a file
beside the clone, which a user's clone does not have, fails the run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers, zipkin
from tests.support.confinement import Confinement

_CONFINEMENT = Confinement.for_repository(Path(__file__).resolve().parents[1])
#: Why the confinement is off in this session, or "" when it is on.
_CONFINEMENT_OFF = ""


def pytest_configure(config: pytest.Config) -> None:
    global _CONFINEMENT_OFF
    # CPython 3.11 and older: a thread that starts while another is inside sys.settrace dies
    # ("Cannot install a trace function while another trace function is being installed")
    # when any audit hook runs, so a tracer that follows threads (coverage) and the hook
    # cannot share a session. scripts/test runs the whole suite on 3.12 too, confined.
    if sys.version_info < (3, 12) and threading.gettrace() is not None:
        _CONFINEMENT_OFF = "Python 3.11 with a thread tracer (coverage) running"
        return
    _CONFINEMENT.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _CONFINEMENT.violations:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CONFINEMENT_OFF:
        terminalreporter.write_line(
            f"confinement to the checkout is off in this session: {_CONFINEMENT_OFF}"
        )
    if _CONFINEMENT.violations:
        terminalreporter.section("files opened beside the repository", red=True)
        terminalreporter.line(
            f"A clone has nothing beside it: vendor these under {_CONFINEMENT.repository}/tests/"
        )
        for path in _CONFINEMENT.violations:
            terminalreporter.line(f"    {path}")


@pytest.fixture
def prometheus_url() -> str:
    """Prometheus base URL, e.g. ``http://127.0.0.1:19090``."""
    return servers.require_env("KITOBSTEST_PROMETHEUS_URL")


@pytest.fixture
def pushgateway_addr() -> str:
    """Pushgateway ``host:port``, e.g. ``127.0.0.1:19191``."""
    return servers.require_env("KITOBSTEST_PUSHGATEWAY")


@pytest.fixture
def app_port() -> int:
    """Port Prometheus scrapes ``/metrics`` from on 127.0.0.1 (job ``app``), e.g. 18000."""
    return int(servers.require_env("KITOBSTEST_APP_PORT"))


@pytest.fixture
def promtool() -> str:
    """Path of promtool, e.g. ``/usr/bin/promtool``."""
    return servers.require_env("KITOBSTEST_PROMTOOL")


@pytest.fixture
def statsd_addr() -> str:
    """statsd daemon UDP ``host:port``, e.g. ``127.0.0.1:18125``."""
    return servers.require_env("KITOBSTEST_STATSD_ADDR")


@pytest.fixture
def statsd_tcp_addr() -> str:
    """statsd daemon TCP ``host:port`` (same daemon and flush file as UDP), e.g. 18127."""
    return servers.require_env("KITOBSTEST_STATSD_TCP_ADDR")


@pytest.fixture
def statsd_admin_addr() -> str:
    """statsd admin interface ``host:port``, e.g. ``127.0.0.1:18126``."""
    return servers.require_env("KITOBSTEST_STATSD_ADMIN")


@pytest.fixture
def statsd_flush_file() -> str:
    """Path of the JSON-lines file the statsd daemon appends one line per flush to."""
    return servers.require_env("KITOBSTEST_STATSD_FLUSH_FILE")


@pytest.fixture
def zipkin_receiver() -> Iterator[zipkin.Receiver]:
    """A Zipkin capture receiver on 127.0.0.1 (202 for good bodies, 400 for bad), closed after."""
    rec = zipkin.Receiver()
    try:
        yield rec
    finally:
        rec.close()
