"""`ContextLogger.log` led by a level key writes at that level, once, under the configured key.

kitobs' own reports (a failed span export, a failed statsd send or push, the cardinality warning)
are written this way through the one-method `kitobs.log.Logger` Protocol, so they must keep their
level through any logger configuration and pass or fail the level filter like any other line.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kitobs import log
from kitobs.log.level import LEVELS, enabled
from kitobs.metrics import memory, pushgateway
from kitobs.tracing import Span
from kitobs.tracing._batch import BatchProcessor
from tests.log.helpers import Lines, parse_logfmt

# The three ways a logger writes a line (each its own emitter): the default configuration, the
# default with a trace hook (what a Kit builds), and the general one (callers, other clocks).
SHAPES: dict[str, dict[str, Any]] = {
    "default": {},
    "traced": {"trace_context": lambda: ("ab" * 16, "cd" * 8)},
    "general": {"time_format": "none", "caller": True},
}


def pairs(line: str, fmt: str) -> list[tuple[str, object]]:
    """Every key/value of a line in order, repeats kept (json.loads would keep only the last)."""
    if fmt == "json":
        got: list[tuple[str, object]] = []

        def hook(items: list[tuple[str, object]]) -> dict[str, object]:
            got.extend(items)
            return dict(items)

        json.loads(line, object_pairs_hook=hook)
        return got
    return [(k, v) for k, v in parse_logfmt(line)]


def level_values(line: str, fmt: str, key: str) -> list[object]:
    """The values of the level keys (*key* and the canonical ``level``) in one line."""
    return [v for k, v in pairs(line, fmt) if k in (key, "level")]


def build(fmt: str, minimum: str, level_key: str, shape: str) -> tuple[log.ContextLogger, Lines]:
    out = Lines()
    logger = log.new(out, format=fmt, level=minimum, level_key=level_key, **SHAPES[shape])
    return logger, out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("level_key", ["level", "severity"])
@pytest.mark.parametrize("minimum", LEVELS)
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_leading_level_key_sets_the_line_level(
    fmt: str, minimum: str, level_key: str, shape: str
) -> None:
    logger, out = build(fmt, minimum, level_key, shape)
    for lead in ("level", level_key):
        for name in LEVELS:
            logger.log(lead, name, "msg", f"{lead} {name}", "n", 1)
    want = [
        (lead, name) for lead in ("level", level_key) for name in LEVELS if enabled(minimum, name)
    ]
    assert len(out.lines) == len(want)
    for line, (lead, name) in zip(out.lines, want, strict=True):
        assert level_values(line, fmt, level_key) == [name], line
        got = dict(pairs(line, fmt))
        assert got[level_key] == name
        assert got["msg"] == f"{lead} {name}"
        assert str(got["n"]) == "1"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("minimum", LEVELS)
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_ordinary_log_lines_stay_at_info(fmt: str, minimum: str, shape: str) -> None:
    logger, out = build(fmt, minimum, "severity", shape)
    logger.log("msg", "plain", "level", "error")  # a level key later in the line is just a key
    logger.log("level", "loud", "msg", "not a level name")
    if not enabled(minimum, "info"):
        assert out.lines == []
        return
    first, second = (pairs(line, fmt) for line in out.lines)
    assert ("severity", "info") in first
    assert ("level", "error") in first
    assert ("severity", "info") in second
    assert ("level", "loud") in second


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_leading_level_keeps_context_caller_and_aliases(fmt: str) -> None:
    logger, out = build(fmt, "warn", "severity", "general")
    child = logger.with_("svc", "api").with_suffix("host", "a")
    child.log("level", "WARNING", "msg", "w")
    child.log("severity", "critical", "msg", "c")
    child.log("level", "error", "msg")  # odd count: marked as for any other line
    lines = [dict(pairs(line, fmt)) for line in out.lines]
    assert [r["severity"] for r in lines] == ["warn", "error", "error"]
    assert all(r["svc"] == "api" and r["host"] == "a" for r in lines)
    assert all(str(r["caller"]).startswith("test_log_leading_level.py:") for r in lines)
    assert lines[2]["msg"] == log.MISSING


def test_prepared_and_level_methods_are_unchanged() -> None:
    logger, out = build("logfmt", "debug", "level", "general")
    logger.info("level", "error", "msg", "explicit info")
    assert level_values(out.lines[0], "logfmt", "level") == ["info", "error"]


# --- kitobs' own reports, through the real components that write them --------------------------


class Failing:
    """A span exporter whose every export fails, as a dead collector would."""

    def __init__(self) -> None:
        self.calls = threading.Event()

    def export(self, spans: object, timeout: float) -> None:
        self.calls.set()
        raise OSError("connection refused")


def report_lines(minimum: str, fmt: str, write: Callable[[log.ContextLogger], None]) -> list[str]:
    out = Lines()
    logger = log.new(out, format=fmt, level=minimum, level_key="severity", time_format="none")
    write(logger)
    logger.flush()
    return out.lines


def export_failure(logger: log.ContextLogger) -> None:
    exporter = Failing()
    processor = BatchProcessor(exporter, flush_interval=0.01, logger=logger)
    span = Span("job", 1, 2)
    span.end()
    processor.on_end(span)
    processor.shutdown()
    assert exporter.calls.is_set()


def push_failure(logger: log.ContextLogger) -> None:
    # A port held bound but not listening refuses connections, and no one else can take it.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        provider = pushgateway.Provider(
            f"127.0.0.1:{port}", job="t", timeout=1.0, push_on_exit=False, logger=logger
        )
        assert provider.push() is False


def folded_labels(logger: log.ContextLogger) -> None:
    provider = memory.Provider(max_label_sets=1, logger=logger)
    counter = provider.counter("jobs", help="Jobs.", labels=("kind",))
    counter.with_labels(kind="a").add(1)
    counter.with_labels(kind="b").add(1)


REPORTS = {
    "span export failed": (export_failure, "error"),
    "push failed": (push_failure, "warn"),
    "metric has too many label sets": (folded_labels, "warn"),
}


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("minimum", LEVELS)
@pytest.mark.parametrize("report", REPORTS)
def test_own_reports_are_written_at_their_level(report: str, minimum: str, fmt: str) -> None:
    write, want = REPORTS[report]
    lines = [line for line in report_lines(minimum, fmt, write) if report in line]
    if not enabled(minimum, want):
        assert lines == []
        return
    assert len(lines) == 1, lines
    assert level_values(lines[0], fmt, "severity") == [want]
