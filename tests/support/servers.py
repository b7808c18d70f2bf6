"""servers: helpers for tests that talk to the real servers scripts/test starts.

scripts/test (and ``scripts/services up``) start Prometheus, the Pushgateway and the statsd
daemon on loopback ports and export their addresses as ``KITOBSTEST_*`` variables, e.g.
``KITOBSTEST_PROMETHEUS_URL=http://127.0.0.1:19090``. A test reads them with `require_env`, which
fails the test when servers are required (``CI`` or ``KITOBSTEST_REQUIRE_SERVERS`` set) and skips
it, with the reason, otherwise.

Waiting helpers poll with a deadline: they never assert on elapsed time, they only give up.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

__all__ = [
    # Environment
    "require_env",
    "require_module",
    "servers_required",
    "free_port",
    # Prometheus
    "prometheus_query",
    "wait_for_prometheus",
    "wait_for_exemplars",
    "promtool_check_metrics",
    # Pushgateway
    "pushgateway_metrics",
    "pushgateway_delete",
    # statsd
    "read_statsd_flushes",
    "statsd_flush_offset",
    "wait_for_statsd_key",
    "statsd_admin",
    "split_addr",
]

_HTTP_TIMEOUT = 5.0
_POLL = 0.1


def servers_required() -> bool:
    """servers_required tells whether a missing server fails tests, e.g. True under CI=true."""
    return bool(os.environ.get("CI") or os.environ.get("KITOBSTEST_REQUIRE_SERVERS"))


def require_env(name: str) -> str:
    """require_env returns variable *name*, e.g. ``require_env("KITOBSTEST_PUSHGATEWAY")``.

    When it is unset or empty the test fails if servers are required (see `servers_required`)
    and is skipped with a reason otherwise.
    """
    value = os.environ.get(name, "")
    if value:
        return value
    reason = (
        f"{name} is not set: run the tests through scripts/test, or `scripts/services up` "
        "and `source` the env file it writes"
    )
    if servers_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_module(name: str, why: str) -> Any:
    """require_module imports module *name*, e.g. ``require_module("hatchling.build", "...")``.

    scripts/test installs every tool a test needs, so there a missing one fails the test (see
    `servers_required`); elsewhere the test is skipped with *why*.
    """
    if servers_required():
        try:
            return importlib.import_module(name)
        except ImportError as err:
            pytest.fail(f"{why}: {err}", pytrace=False)
    return pytest.importorskip(name, reason=why)


def free_port() -> int:
    """free_port returns a TCP port on 127.0.0.1 that was free a moment ago, e.g. 40123."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def split_addr(addr: str) -> tuple[str, int]:
    """split_addr parses ``host:port``, e.g. ``split_addr("127.0.0.1:18125")``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"want host:port, have {addr!r}")
    return host, int(port)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT) as response:
        return json.load(response)


def prometheus_query(url: str, promql: str) -> list[dict[str, Any]]:
    """prometheus_query runs an instant query, e.g. ``prometheus_query(url, "up")``.

    It returns the ``data.result`` list; vector sample values are strings, as Prometheus sends
    them (``{"metric": {...}, "value": [ts, "7"]}``). A query Prometheus rejects raises
    AssertionError with its error message.
    """
    query = urllib.parse.urlencode({"query": promql})
    try:
        body = _get_json(f"{url.rstrip('/')}/api/v1/query?{query}")
    except urllib.error.HTTPError as err:
        raise AssertionError(f"Prometheus rejected {promql!r}: {err.read().decode()}") from err
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus rejected {promql!r}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_prometheus(
    url: str,
    promql: str,
    predicate: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """wait_for_prometheus polls *promql* until *predicate(result)* holds, e.g. non-empty.

    It returns that result, or raises AssertionError with the last result after *timeout*
    seconds. Prometheus needs ~5 s after start and one scrape interval after that to show data.
    """
    return _poll(lambda: prometheus_query(url, promql), predicate, timeout, repr(promql))


def _poll(
    fetch: Callable[[], list[dict[str, Any]]],
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> list[dict[str, Any]]:
    """Call *fetch* until *predicate* holds of its result; AssertionError after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if predicate(result):
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"after {timeout} s {what} still does not match; last result: {result}"
            )
        time.sleep(_POLL)


def wait_for_exemplars(
    url: str,
    promql: str,
    predicate: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """wait_for_exemplars polls ``/api/v1/query_exemplars`` for *promql* until *predicate* holds.

    It passes the exemplars of every matching series, flattened, each with its series' labels
    under ``"series"`` (e.g. ``{"labels": {"trace_id": ...}, "value": "0.5", "series": {...}}``),
    and returns them; AssertionError with the last list after *timeout* seconds. Prometheus keeps
    exemplars only with ``--enable-feature=exemplar-storage``, as scripts/test starts it.
    """

    def fetch() -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(
            {"query": promql, "start": time.time() - 3600, "end": time.time() + 60}
        )
        body = _get_json(f"{url.rstrip('/')}/api/v1/query_exemplars?{query}")
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus rejected {promql!r}: {body}")
        return [{**e, "series": s["seriesLabels"]} for s in body["data"] for e in s["exemplars"]]

    return _poll(fetch, predicate, timeout, f"the exemplars of {promql!r}")


def promtool_check_metrics(promtool: str, exposition: str) -> subprocess.CompletedProcess[str]:
    """promtool_check_metrics lints *exposition* text, e.g. ``generate_latest(r).decode()``.

    Exit code 0 is clean, 3 lint problems (on stderr), 1 a parse error. Only the 0.0.4 text
    format is understood, not OpenMetrics.
    """
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def pushgateway_metrics(addr: str) -> list[dict[str, Any]]:
    """pushgateway_metrics returns the groups the Pushgateway at *addr* holds.

    *addr* is ``host:port``, e.g. ``pushgateway_metrics("127.0.0.1:19191")``. Each group (from
    ``/api/v1/metrics``) has ``labels`` (job and grouping key), ``last_push_successful`` and one
    entry per metric family, e.g. ``group["batch_items_total"]["metrics"][0]["value"] == "7"``.
    """
    body = _get_json(f"http://{addr}/api/v1/metrics")
    if body.get("status") != "success":
        raise AssertionError(f"Pushgateway answered {body}")
    groups: list[dict[str, Any]] = body["data"]
    return groups


def pushgateway_delete(addr: str, job: str, grouping_key: dict[str, str] | None = None) -> None:
    """pushgateway_delete removes one group, e.g. ``pushgateway_delete(addr, "batch")``."""
    path = f"/metrics/job/{urllib.parse.quote(job, safe='')}"
    for name, value in (grouping_key or {}).items():
        path += f"/{urllib.parse.quote(name, safe='')}/{urllib.parse.quote(value, safe='')}"
    request = urllib.request.Request(f"http://{addr}{path}", method="DELETE")
    with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:
        response.read()


def statsd_flush_offset(path: str) -> int:
    """statsd_flush_offset returns the flush file's size, e.g. to read only later flushes."""
    return os.path.getsize(path)


def read_statsd_flushes(path: str, start: int = 0) -> list[dict[str, Any]]:
    """read_statsd_flushes parses the statsd flush file, e.g. ``read_statsd_flushes(path)``.

    Each item is one flush as written by tests/support/jsonl_backend.js: ``counters``,
    ``gauges``, ``timers``, ``timer_counters``, ``timer_data``, ``counter_rates``, ``sets``,
    ``pctThreshold`` and ``timestamp``. *start* is a byte offset from `statsd_flush_offset`;
    a line still being written (no newline yet) is left for the next read.
    """
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    lines = data.split(b"\n")[:-1]  # the last piece is "" or a partial line
    return [json.loads(line) for line in lines if line]


def wait_for_statsd_key(
    path: str, kind: str, key: str, timeout: float = 10.0, start: int = 0
) -> dict[str, Any]:
    """wait_for_statsd_key returns the first flush whose *kind* map holds *key*.

    For example ``wait_for_statsd_key(path, "counters", "app.req")["counters"]["app.req"]``.
    *kind* is a flush section (``counters``, ``gauges``, ``timers``, ``timer_data``, ``sets``...).
    Raises AssertionError after *timeout* seconds. Use a key unique to the test: the daemon
    (deleteIdleStats) reports a key only in flushes after it received data for it.
    """
    deadline = time.monotonic() + timeout
    while True:
        flushes = read_statsd_flushes(path, start)
        for flush in flushes:
            if kind not in flush:
                raise AssertionError(f"no section {kind!r} in a statsd flush: {sorted(flush)}")
            if key in flush[kind]:
                return flush
        if time.monotonic() >= deadline:
            seen = sorted({k for f in flushes for k in f[kind]})
            raise AssertionError(f"statsd flushed no {kind} {key!r} in {timeout} s; saw {seen}")
        time.sleep(_POLL)


def statsd_admin(addr: str, command: str) -> str:
    """statsd_admin sends one admin command and returns the answer, e.g. ``"health: up"``.

    *addr* is the admin ``host:port`` (``KITOBSTEST_STATSD_ADMIN``); *command* is e.g.
    ``health``, ``counters`` or ``delcounters app.*``. The trailing ``END`` line is removed.
    Values since the last flush only; listings are JavaScript literals, not JSON.
    """
    host, port = split_addr(addr)
    # health and help answer one line; the listing commands end with END and a blank line.
    one_line = command.split(maxsplit=1)[0] in {"health", "help"}
    data = b""
    with socket.create_connection((host, port), timeout=_HTTP_TIMEOUT) as sock:
        sock.sendall(command.encode() + b"\n")
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if (
                not chunk
                or data.endswith(b"END\n\n")
                or data == b"ERROR\n"
                or (one_line and data.endswith(b"\n"))
            ):
                break
    return data.decode().removesuffix("END\n\n").strip()
