"""mypy-only proofs that kitobs.log's loggers match the Logger protocol (never run by pytest)."""

from __future__ import annotations

from kitobs import log
from kitobs.endpoint import Middleware
from kitobs.endpoint.logging import logging_middleware
from kitobs.log import capture, stdlib, writer
from kitobs.log import structlog as kit_structlog


def _context(logger: log.ContextLogger) -> log.Logger:
    return logger


def _nop(logger: log.NopLogger) -> log.Logger:
    return logger


def _stdlib(logger: stdlib.Logger) -> log.Logger:
    return logger


def _levels(logger: log.ContextLogger) -> stdlib.LevelLogger:
    return logger


def _nop_levels(logger: log.NopLogger) -> stdlib.LevelLogger:
    return logger


def _children(logger: log.ContextLogger) -> log.ContextLogger:
    return logger.with_("a", 1).with_prefix("b", 2).with_suffix("c", 3).with_caller("x.py:1")


def _file_writer(w: writer.FileWriter) -> log.Writer:
    return w


def _stream_writer(w: writer.StreamWriter) -> log.Writer:
    return w


def _buffered_writer(w: writer.BufferedWriter) -> log.Writer:
    return w


def _nonblocking_writer(w: writer.NonBlockingWriter) -> log.Writer:
    return w


def _recorder(w: capture.Recorder) -> log.Writer:
    return w


def _capture() -> list[dict[str, object]]:
    logger, records = capture.new()
    logger.info("msg", "x")
    return records


def _middleware(logger: log.Logger) -> Middleware:
    return logging_middleware(logger, name="x")


def _structlog_sink(logger: log.ContextLogger) -> kit_structlog.Sink:
    return kit_structlog.LoggerFactory(logger)()


def _hook() -> log.TraceContext:
    def current() -> tuple[str, str] | None:
        return None

    return current
