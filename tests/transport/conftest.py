"""Fixtures for the transport tests: real servers in subprocesses, scrapes and span captures.

`Served` starts gunicorn or uvicorn on a free 127.0.0.1 port with one of the ``srv_*`` modules,
waits (bounded polling) until ``/metrics`` answers, and stops the process by its PID afterwards.
Each server sends its spans to a Zipkin capture receiver (`tests.support.zipkin.Receiver`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import servers
from tests.support.zipkin import Receiver

REPO = Path(__file__).resolve().parents[2]


class Served:
    """Served is one server subprocess, e.g. ``Served("gunicorn", "srv_flask", receiver)``."""

    def __init__(
        self, runner: str, module: str, zipkin_url: str, *, port: int = 0, **env: str
    ) -> None:
        self.port = port or servers.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # "srv_x" serves srv_x's app; "srv_x:other" another application of that module.
        target = f"tests.transport.{module}" + ("" if ":" in module else ":app")
        if runner == "gunicorn":
            cmd = [
                sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "4",
                "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "2",
                "--log-level", "warning", target,
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-m", "uvicorn", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning", target,
            ]  # fmt: skip
        environment = dict(os.environ)
        environment.update(env)
        environment["KITOBS_TESTAPP_ZIPKIN"] = zipkin_url
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), environment.get("PYTHONPATH", "")) if p
        )
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def log(self) -> str:
        """log returns what the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/metrics", timeout=1) as response:
                    response.read()
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """scrape reads ``/metrics`` and returns {(sample name, labels): value}."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def wait_metric(self, name: str, want: float, timeout: float = 10.0, **labels: str) -> float:
        """wait_metric polls until sample *name* with exactly *labels* equals *want*.

        The server records a request after the response went out, so a scrape right after the
        client got its answer may still miss it. Returns the value, or raises with what was seen.
        """
        key = (name, frozenset(labels.items()))
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            value = samples.get(key)
            if value == want:
                return value
            if time.monotonic() >= deadline:
                near = {k: v for k, v in samples.items() if k[0] == name}
                raise AssertionError(f"want {name}{labels} = {want}, have {value}; saw {near}")
            time.sleep(0.05)

    def close(self) -> None:
        """close stops the server (SIGTERM, then SIGKILL) and closes its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def series(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> list[dict[str, str]]:
    """series lists the label sets of sample *name*."""
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture
def zipkin() -> Iterator[Receiver]:
    """zipkin is a Zipkin capture receiver on 127.0.0.1, closed after the test."""
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


def serve(runner: str, module: str, zipkin: Receiver, **env: str) -> Iterator[Served]:
    """serve is the body of the server fixtures: start, yield, stop."""
    served = Served(runner, module, zipkin.url, **env)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def flask_server(zipkin: Receiver) -> Iterator[Served]:
    """flask_server is srv_flask under gunicorn."""
    yield from serve("gunicorn", "srv_flask", zipkin, KITOBS_TESTAPP_SERVICE="flask-svc")


@pytest.fixture
def wsgi_server(zipkin: Receiver) -> Iterator[Served]:
    """wsgi_server is srv_wsgi (plain WSGI, go-kit Servers) under gunicorn."""
    yield from serve("gunicorn", "srv_wsgi", zipkin, KITOBS_TESTAPP_SERVICE="wsgi-svc")


@pytest.fixture
def starlette_server(zipkin: Receiver) -> Iterator[Served]:
    """starlette_server is srv_starlette under uvicorn."""
    yield from serve("uvicorn", "srv_starlette", zipkin, KITOBS_TESTAPP_SERVICE="starlette-svc")


@pytest.fixture
def fastapi_server(zipkin: Receiver) -> Iterator[Served]:
    """fastapi_server is srv_fastapi under uvicorn."""
    yield from serve("uvicorn", "srv_fastapi", zipkin, KITOBS_TESTAPP_SERVICE="fastapi-svc")


@pytest.fixture
def django_server(zipkin: Receiver) -> Iterator[Served]:
    """django_server is srv_django (Django's WSGI handler) under gunicorn."""
    yield from serve("gunicorn", "srv_django", zipkin, KITOBS_TESTAPP_SERVICE="django-svc")


@pytest.fixture
def asgi_server(zipkin: Receiver) -> Iterator[Served]:
    """asgi_server is srv_asgi (plain ASGI, go-kit Servers) under uvicorn."""
    yield from serve("uvicorn", "srv_asgi", zipkin, KITOBS_TESTAPP_SERVICE="asgi-svc")


@pytest.fixture
def django_asgi_server(zipkin: Receiver) -> Iterator[Served]:
    """django_asgi_server is srv_django_asgi (Django's ASGI handler) under uvicorn."""
    yield from serve("uvicorn", "srv_django_asgi", zipkin, KITOBS_TESTAPP_SERVICE="django-asgi")


def spans_named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """spans_named keeps the spans called *name*."""
    return [s for s in spans if s.get("name") == name]
