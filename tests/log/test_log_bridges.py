"""Bridges: the standard logging module both ways, and structlog into kitobs."""

from __future__ import annotations

import inspect
import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from kitobs import log
from kitobs.log import capture, stdlib
from kitobs.log import structlog as kit_structlog
from tests.log.helpers import Lines

HERE = "test_log_bridges.py"


def _next_line() -> int:
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    return frame.f_back.f_lineno + 1


@pytest.fixture
def std_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A private stdlib logger (not the root), its handlers removed afterwards."""
    logger = logging.getLogger(f"kitobs.tests.{request.node.name}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_handler_writes_records_through_kitobs(std_logger: logging.Logger) -> None:
    kit, records = capture.new(caller=True, level="info")
    std_logger.addHandler(stdlib.Handler(kit))
    std_logger.debug("filtered by kitobs")
    line = _next_line()
    std_logger.warning("disk %d%% full", 91)
    std_logger.critical("down")
    std_logger.info("password=%s", "hunter2")
    assert records == [
        {
            "level": "warn",
            "caller": f"{HERE}:{line}",
            "msg": "disk 91% full",
            "logger": std_logger.name,
        },
        {
            "level": "error",
            "caller": f"{HERE}:{line + 1}",
            "msg": "down",
            "logger": std_logger.name,
        },
        {
            "level": "info",
            "caller": f"{HERE}:{line + 2}",
            "msg": "password=hunter2",
            "logger": std_logger.name,
        },
    ]


def test_handler_keeps_extra_fields_as_keys(std_logger: logging.Logger) -> None:
    out = Lines()
    std_logger.addHandler(stdlib.Handler(log.new(out, time_format="none")))
    std_logger.info("order placed", extra={"order_id": 17, "user name": "ada", "api_key": "k"})
    std_logger.info("plain")
    # A record another handler formatted first carries message/asctime: they are not extra.
    std_logger.addHandler(logging.StreamHandler(io.StringIO()))
    std_logger.handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    std_logger.handlers.reverse()
    std_logger.warning("formatted", extra={"cart": {"items": 2, "token": "t"}})
    assert out.lines == [
        f'level=info msg="order placed" logger={std_logger.name} order_id=17 user_name=ada'
        " api_key=[REDACTED]\n",
        f"level=info msg=plain logger={std_logger.name}\n",
        f"level=warn msg=formatted logger={std_logger.name}"
        " cart=\"{'items': 2, 'token': '[REDACTED]'}\"\n",
    ]


def test_handler_carries_exceptions_and_stacks(std_logger: logging.Logger) -> None:
    kit, records = capture.new()
    std_logger.addHandler(stdlib.Handler(kit))
    try:
        {}["missing"]
    except KeyError:
        std_logger.exception("lookup failed")
    std_logger.info("here", stack_info=True)
    failed, stacked = records
    assert failed["level"] == "error"
    assert str(failed["exception"]).startswith("Traceback (most recent call last):")
    assert str(failed["exception"]).endswith("KeyError: 'missing'")
    assert "test_handler_carries_exceptions_and_stacks" in str(stacked["stack"])


def test_handler_through_a_real_logfmt_logger(std_logger: logging.Logger) -> None:
    out = Lines()
    std_logger.addHandler(stdlib.Handler(log.new(out, time_format="none")))
    std_logger.error("boom")
    assert out.lines == [f"level=error msg=boom logger={std_logger.name}\n"]


def test_handler_errors_go_to_logging(
    std_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = stdlib.Handler(log.nop())  # nop has no failure path; a bad arg does
    # The record goes to the handler alone: pytest's own capture handler (9.1+ attaches it to
    # every logger) would format it first and raise, which is pytest's behaviour, not kitobs's.
    record = std_logger.makeRecord(
        std_logger.name, logging.INFO, __file__, 1, "%d", ("not a number",), None
    )
    handler.handle(record)  # getMessage() raises inside emit
    assert "not a number" in capsys.readouterr().err  # logging's handleError printed it


def test_kitobs_logger_writes_into_logging(caplog: pytest.LogCaptureFixture) -> None:
    target = logging.getLogger("kitobs.tests.into")
    kit = stdlib.Logger(target).with_("svc", "api").with_prefix("p", 1).with_suffix("s", 2)
    as_protocol: log.Logger = kit
    with caplog.at_level(logging.DEBUG, logger=target.name):
        line = _next_line()
        as_protocol.log("msg", "hello world", "password", "x")
        kit.log("level", "error", "msg", "bad")
        kit.debug("msg", "d")
        kit.warn("msg", "w")
        kit.error("odd")
    got = [(r.levelno, r.getMessage(), r.lineno, r.filename) for r in caplog.records]
    assert got == [
        (logging.INFO, 'p=1 svc=api msg="hello world" password=[REDACTED] s=2', line, HERE),
        (logging.ERROR, "p=1 svc=api level=error msg=bad s=2", line + 1, HERE),
        (logging.DEBUG, "p=1 svc=api msg=d s=2", line + 2, HERE),
        (logging.WARNING, "p=1 svc=api msg=w s=2", line + 3, HERE),
        (logging.ERROR, "p=1 svc=api odd=(MISSING) s=2", line + 4, HERE),
    ]
    assert caplog.records[0].keyvals == (  # type: ignore[attr-defined]
        ("p", 1),
        ("svc", "api"),
        ("msg", "hello world"),
        ("password", "[REDACTED]"),
        ("s", 2),
    )


def test_kitobs_into_logging_respects_its_level(caplog: pytest.LogCaptureFixture) -> None:
    target = logging.getLogger("kitobs.tests.level")
    with caplog.at_level(logging.WARNING, logger=target.name):
        stdlib.Logger(target, redact=False).info("password", "shown-if-written")
        stdlib.Logger(target, redact=False).error("password", "p")
    assert [r.getMessage() for r in caplog.records] == ["password=p"]


def test_structlog_renders_through_kitobs() -> None:
    kit, records = capture.new(caller=True)
    logger = structlog.wrap_logger(
        kit_structlog.Sink(kit),
        processors=[structlog.processors.add_log_level, kit_structlog.render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    line = _next_line()
    logger.bind(user=7).warning("slow", ms=250, api_key="k")
    logger.info("plain")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("failed")
    assert records[:2] == [
        {
            "level": "warn",
            "caller": f"{HERE}:{line}",
            "msg": "slow",
            "user": 7,
            "ms": 250,
            "api_key": "[REDACTED]",
        },
        {"level": "info", "caller": f"{HERE}:{line + 1}", "msg": "plain"},
    ]
    assert records[2]["level"] == "error"
    assert str(records[2]["exception"]).endswith("ZeroDivisionError: division by zero")


def test_structlog_factory_and_methods() -> None:
    out = Lines()
    kit = log.new(out, time_format="none", level="debug")
    sink = kit_structlog.LoggerFactory(kit)("any", "name")
    event = {"event": "e", "timestamp": "dropped", "k": 1}
    for method in ("debug", "info", "msg", "warning", "warn", "error", "critical", "fatal"):
        args, kwargs = kit_structlog.render(None, method, dict(event))
        getattr(sink, method)(*args, **kwargs)
    levels = [line.split()[0] for line in out.lines]
    assert levels == [
        "level=" + x for x in ("debug", "info", "info", "warn", "warn", "error", "error", "error")
    ]
    assert out.lines[0] == "level=debug msg=e k=1\n"


def test_structlog_exc_info_forms() -> None:
    err = ValueError("v")
    args, _ = kit_structlog.render(None, "error", {"event": "x", "exc_info": err})
    assert str(args[-1]).endswith("ValueError: v")
    args, _ = kit_structlog.render(None, "error", {"event": "x", "exc_info": True})
    assert args == ("msg", "x")  # no exception being handled: nothing to add
