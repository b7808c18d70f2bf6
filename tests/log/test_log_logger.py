"""One test per bullet of kitobs.log: the logger, its context, levels, keys, encoders, caller."""

from __future__ import annotations

import contextvars
import datetime as dt
import inspect
import json
import re
import sys
from typing import Any

import pytest

from kitobs import config, log
from kitobs.errors import ConfigError
from kitobs.log import capture, level, logfmt
from tests.log.helpers import Lines, parse_logfmt

HERE = "test_log_logger.py"


def _line() -> int:
    """The line number of the caller's next line."""
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    return frame.f_back.f_lineno + 1


def logger_and_lines(**options: Any) -> tuple[log.ContextLogger, Lines]:
    out = Lines()
    options.setdefault("time_format", "none")
    return log.new(out, **options), out


# --- Logger: one method, alternating keys and values -------------------------------------------


def test_log_takes_alternating_keys_and_values() -> None:
    logger, out = logger_and_lines()
    as_protocol: log.Logger = logger
    as_protocol.log("msg", "hello", "user", 7)
    assert out.lines == ["level=info msg=hello user=7\n"]


def test_odd_keyvals_mark_the_missing_value() -> None:
    logger, out = logger_and_lines()
    logger.info("msg", "x", "dangling")
    logger.with_("bound").info("k")
    logger.with_suffix("s", 1).info("k")
    assert out.lines == [
        f"level=info msg=x dangling={log.MISSING}\n",
        f"level=info bound={log.MISSING} k={log.MISSING}\n",
        f"level=info k={log.MISSING} s=1\n",
    ]


# --- Context loggers ---------------------------------------------------------------------------


def test_with_prefix_suffix_keep_go_kit_order() -> None:
    logger, out = logger_and_lines()
    child = logger.with_("a", 1).with_prefix("p", 0).with_suffix("s", 9).with_("b", 2)
    child.info("call", "x")
    logger.info("root", "y")  # the parent is unchanged
    assert out.lines == [
        "level=info p=0 a=1 b=2 call=x s=9\n",
        "level=info root=y\n",
    ]


class CountingStr:
    """A value that counts how often it is rendered."""

    def __init__(self) -> None:
        self.renders = 0

    def __str__(self) -> str:
        self.renders += 1
        return "rendered"


def test_bound_values_are_encoded_once_not_per_call() -> None:
    logger, out = logger_and_lines()
    value = CountingStr()
    child = logger.with_("obj", value)
    for _ in range(5):
        child.info("msg", "x")
    assert value.renders == 1
    assert out.lines == ["level=info obj=rendered msg=x\n"] * 5


# --- Standard keys, timestamp, default logger ------------------------------------------------


def test_default_logger_writes_ts_and_level_in_logfmt_to_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    logger = log.new()
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    logger.info("msg", "hi")
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    err = capfd.readouterr().err
    match = re.fullmatch(r"ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z level=info msg=hi\n", err)
    assert match, err
    stamp = dt.datetime.fromisoformat(match[1])
    assert before.replace(microsecond=0) <= stamp <= after


@pytest.mark.parametrize(
    ("time_format", "pattern"),
    [
        ("rfc3339_micro", r"t=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"),
        ("rfc3339", r"t=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        ("unix", r"t=\d{10}\.\d{6}"),
        ("unix_ms", r"t=\d{13}"),
    ],
)
def test_time_formats_and_key(time_format: str, pattern: str) -> None:
    logger, out = logger_and_lines(time_format=time_format, time_key="t")
    logger.info("msg", "x")
    assert re.fullmatch(pattern + r" level=info msg=x\n", out.lines[0]), out.lines[0]


def test_json_time_is_utc_rfc3339() -> None:
    logger, out = logger_and_lines(format="json", time_format="rfc3339_micro")
    logger.info("msg", "x")
    record = json.loads(out.lines[0])
    assert list(record) == ["ts", "level", "msg"]
    stamp = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == dt.timedelta(0)


def test_no_time_format_leaves_out_ts() -> None:
    logger, out = logger_and_lines(format="json")
    logger.info("msg", "x")
    assert out.lines == ['{"level":"info","msg":"x"}\n']


# --- Caller ------------------------------------------------------------------------------------


def test_caller_names_the_call_site_through_levels_and_context() -> None:
    logger, out = logger_and_lines(caller=True, level="debug")
    child = logger.with_("a", 1).with_prefix("p", 2).with_suffix("s", 3)
    lines = []
    for method in ("log", "debug", "info", "warn", "error"):
        lines.append(_line())
        getattr(child, method)("msg", method)
    for want, text in zip(lines, out.lines, strict=True):
        assert parse_logfmt(text[:-1])[1] == ("caller", f"{HERE}:{want}")


def test_caller_position_and_json() -> None:
    logger, out = logger_and_lines(caller=True, format="json", time_format="rfc3339")
    line = _line()
    logger.with_("a", 1).warn("msg", "x")
    record = json.loads(out.lines[0])
    assert list(record) == ["ts", "level", "caller", "a", "msg"]
    assert record["caller"] == f"{HERE}:{line}"


def test_with_caller_fixes_the_caller_only_when_callers_are_on() -> None:
    logger, out = logger_and_lines(caller=True)
    logger.with_caller("elsewhere.py:3").info("msg", "x")
    plain, _plain_out = logger_and_lines()
    assert plain.with_caller("elsewhere.py:3") is plain
    assert out.lines == ["level=info caller=elsewhere.py:3 msg=x\n"]
    assert plain.writes_caller is False
    assert logger.writes_caller is True


# --- Encoders ----------------------------------------------------------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_that_are_not_native_use_str_then_a_marker() -> None:
    logger, out = logger_and_lines()
    logger.info(
        "obj", CountingStr(), "bad", Unprintable(), "raw", b"b\xffytes", "exc", KeyError("k")
    )
    assert out.lines == [
        "level=info obj=rendered bad=\"(UNPRINTABLE Unprintable)\" raw=b\ufffdytes exc='k'\n"
    ]


def test_json_values() -> None:
    logger, out = logger_and_lines(format="json")
    nested = {"a": [1, 2.5, None], "b": Unprintable.__name__}
    logger.info(
        "d", nested, "t", (1, "x"), "n", float("nan"), "i", float("-inf"), "o", CountingStr()
    )
    logger.info("loop", [float("nan")], "bad", Unprintable())
    first, second = (json.loads(line) for line in out.lines)
    assert first == {
        "level": "info",
        "d": nested,
        "t": [1, "x"],
        "n": "NaN",
        "i": "-Inf",
        "o": "rendered",
    }
    assert second == {"level": "info", "loop": "[nan]", "bad": "(UNPRINTABLE Unprintable)"}


def test_logfmt_quoting_follows_go_logfmt() -> None:
    logger, out = logger_and_lines()
    logger.info("a", "x y", "b", "k=v", "c", 'q"', "d", "", "e", "null", "f", None, "g", "tab\t")
    assert out.lines == ['level=info a="x y" b="k=v" c="q\\"" d= e="null" f=null g="tab\\t"\n']


def test_keys_are_sanitized() -> None:
    logger, out = logger_and_lines()
    logger.info("a b", 1, "c=d", 2, 'e"', 3, "", 4, 5, 6, None, 7)
    assert out.lines == ["level=info a_b=1 c_d=2 e_=3 _=4 5=6 null=7\n"]
    assert logfmt.sanitize_key("x\ny") == "x_y"


def test_an_encoder_never_raises_on_strange_input() -> None:
    logger, out = logger_and_lines(format="json")
    huge = 10**5000  # int() refuses to print it
    logger.info(["unhashable"], 1, "big", huge, "set", {1}, b"k", "v")
    record = json.loads(out.lines[0])
    assert record == {
        "level": "info",
        "['unhashable']": 1,
        "big": "(UNPRINTABLE int)",
        "set": "{1}",
        "k": "v",
    }


def test_short_strings_come_from_the_cache_unchanged() -> None:
    logger, out = logger_and_lines()
    for _ in range(3):
        logger.info("s", "a b", "t", "plain")
    assert out.lines == ['level=info s="a b" t=plain\n'] * 3


# --- Levels ------------------------------------------------------------------------------------


def test_level_filter_drops_below_and_costs_no_evaluation() -> None:
    logger, out = logger_and_lines(level="warn")
    value = CountingStr()
    logger.debug("v", value)
    logger.info("v", value)
    logger.log("v", value)  # log writes at info
    logger.warn("msg", "w")
    logger.error("msg", "e")
    assert value.renders == 0
    assert out.lines == ["level=warn msg=w\n", "level=error msg=e\n"]
    assert not logger.enabled("info")
    assert logger.enabled("ERROR")


def test_filtered_level_is_the_shared_no_op() -> None:
    logger, _ = logger_and_lines(level="error")
    assert logger.debug is logger.info is logger.warn  # one empty function, chosen at build time
    assert logger.error is not logger.warn


def test_level_key_is_configurable() -> None:
    logger, out = logger_and_lines(level_key="severity", format="json")
    logger.error("msg", "x")
    assert out.lines == ['{"severity":"error","msg":"x"}\n']


@pytest.mark.parametrize(
    ("text", "want"),
    [("WARN", "warn"), (" Debug ", "debug"), ("warning", "warn"), ("CRITICAL", "error")],
)
def test_level_parsed_from_string(text: str, want: str) -> None:
    assert level.parse_level(text) == want
    logger, _out = logger_and_lines(level=text)
    assert logger.enabled(want)
    assert logger.enabled("error")


def test_unknown_level_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"log.level: is not a log level; got 'verbose'.*'debug'"):
        log.new(Lines(), level="verbose")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"format": "xml"}, "log.format"),
        ({"time_format": "iso"}, "log.time_format"),
        ({"level_key": ""}, "log.level_key"),
        ({"time_key": ""}, "log.time_key"),
        ({"redact_extra_keys": [""]}, "log.redact_keys"),
        ({"queue_size": 0, "nonblocking": True}, "log.queue_size"),
    ],
)
def test_bad_options_fail_at_build(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        log.new(Lines(), **options)
    assert info.value.key == key


# --- Redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "access_token",
        "X-Api-Key",
        "db.password",
        "Authorization",
        "cookie",
        "apikey",
        "user_passwd",
        "client-secret",
        "Set-Cookie",
    ],
)
def test_credential_keys_are_redacted_by_default(key: str) -> None:
    logger, out = logger_and_lines()
    logger.info(key, "hunter2", "user", "ada")
    logger.with_(key, "hunter2").info("msg", "bound")
    assert "hunter2" not in "".join(out.lines)
    assert parse_logfmt(out.lines[0][:-1])[1][1] == "[REDACTED]"


@pytest.mark.parametrize("key", ["tokens", "user", "passwords", "token_count", "secretary"])
def test_other_keys_are_not_redacted(key: str) -> None:
    logger, out = logger_and_lines()
    logger.info(key, "visible")
    assert out.lines == [f"level=info {key}=visible\n"]


def test_redaction_extends_replaces_and_turns_off() -> None:
    extended, ext_out = logger_and_lines(redact_extra_keys=["pin"])
    extended.info("card_pin", "1234", "password", "p")
    replaced, rep_out = logger_and_lines(redact_keys=["pin"])
    replaced.info("card_pin", "1234", "password", "p")
    off, off_out = logger_and_lines(redact=False)
    off.info("password", "p")
    assert ext_out.lines == ["level=info card_pin=[REDACTED] password=[REDACTED]\n"]
    assert rep_out.lines == ["level=info card_pin=[REDACTED] password=p\n"]
    assert off_out.lines == ["level=info password=p\n"]


def test_redaction_in_json() -> None:
    logger, out = logger_and_lines(format="json")
    logger.info("X-Api-Key", "k", "ok", 1)
    assert json.loads(out.lines[0]) == {"level": "info", "X-Api-Key": "[REDACTED]", "ok": 1}


# --- Trace correlation hook ----------------------------------------------------------------------

CURRENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "current_span", default=None
)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def test_trace_ids_join_lines_inside_a_span_only() -> None:
    logger, out = logger_and_lines(trace_context=CURRENT.get, caller=True, time_format="rfc3339")
    child = logger.with_("svc", "api")
    child.info("msg", "outside")
    token = CURRENT.set((TRACE_ID, SPAN_ID))
    try:
        child.info("msg", "inside")
    finally:
        CURRENT.reset(token)
    outside, inside = (parse_logfmt(line[:-1]) for line in out.lines)
    assert [k for k, _ in outside] == ["ts", "level", "caller", "svc", "msg"]
    assert [k for k, _ in inside] == ["ts", "level", "caller", "trace_id", "span_id", "svc", "msg"]
    assert dict(inside)["trace_id"] == TRACE_ID
    assert dict(inside)["span_id"] == SPAN_ID


def test_trace_ids_in_json() -> None:
    logger, out = logger_and_lines(format="json", trace_context=lambda: (TRACE_ID, SPAN_ID))
    logger.with_caller("x.py:1").info("msg", "x")
    assert json.loads(out.lines[0]) == {
        "level": "info",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "msg": "x",
    }


def test_a_failing_trace_hook_does_not_lose_the_line() -> None:
    errors: list[BaseException] = []

    def broken() -> tuple[str, str] | None:
        raise LookupError("no tracer")

    out = Lines()
    logger = log.new(out, time_format="none", trace_context=broken, on_error=errors.append)
    logger.info("msg", "x")
    assert out.lines == ["level=info msg=x\n"]
    assert [type(e) for e in errors] == [LookupError]


# --- Construction ------------------------------------------------------------------------------


def test_from_settings_uses_every_key(tmp_path: Any) -> None:
    path = tmp_path / "app.log"
    settings = config.load(
        env={
            "KITOBS_LOG_FORMAT": "json",
            "KITOBS_LOG_LEVEL": "WARN".lower(),
            "KITOBS_LOG_OUTPUT": str(path),
            "KITOBS_LOG_LEVEL_KEY": "severity",
            "KITOBS_LOG_TIME_KEY": "time",
            "KITOBS_LOG_TIME_FORMAT": "unix_ms",
            "KITOBS_LOG_CALLER": "true",
            "KITOBS_LOG_REDACT_EXTRA_KEYS": "pin",
            "KITOBS_LOG_BUFFERED": "true",
        },
        search=False,
    )
    logger = log.from_settings(settings.log)
    line = _line()
    logger.warn("pin", "1234", "password", "x")
    logger.info("msg", "filtered")
    logger.close()
    records = [json.loads(text) for text in path.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert list(record) == ["time", "severity", "caller", "pin", "password"]
    assert record["severity"] == "warn"
    assert isinstance(record["time"], int)
    assert record["caller"] == f"{HERE}:{line}"
    assert record["pin"] == record["password"] == "[REDACTED]"


def test_nop_logger_does_nothing() -> None:
    logger = log.nop()
    same = logger.with_("a", 1).with_prefix("b").with_suffix("c").with_caller("x:1")
    assert same is logger
    assert logger.log("a", 1) is None
    assert logger.error("e") is None
    assert not logger.enabled("error")
    assert not logger.writes_caller
    logger.flush()
    logger.close()


def test_capture_records_dicts() -> None:
    logger, records = capture.new(caller=True, trace_context=lambda: (TRACE_ID, SPAN_ID))
    line = _line()
    logger.with_("svc", "api").debug("msg", "x", "n", 2.5, "token", "t")
    assert records == [
        {
            "level": "debug",
            "caller": f"{HERE}:{line}",
            "trace_id": TRACE_ID,
            "span_id": SPAN_ID,
            "svc": "api",
            "msg": "x",
            "n": 2.5,
            "token": "[REDACTED]",
        }
    ]


def test_python_streams_as_output(capsys: pytest.CaptureFixture[str]) -> None:
    # capsys replaces sys.stdout/sys.stderr with objects without a file descriptor.
    out_logger = log.new("stdout", time_format="none")
    err_logger = log.new("stderr", time_format="none")
    out_logger.info("to", "out")
    err_logger.info("to", "err")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("level=info to=out\n", "level=info to=err\n")
    assert sys.stdout is not sys.__stdout__


# --- The default configuration's own code path -------------------------------------------------

STAMP = r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def test_default_path_redacts_marks_missing_and_survives_odd_values() -> None:
    out = Lines()
    logger = log.new(out).with_("svc", "api")
    logger.info("token", "t", "msg", "x")
    logger.info("msg", "x", "dangling")
    logger.info("list", [1, 2], "k\ud800", "v")
    want = [
        r"level=info svc=api token=\[REDACTED\] msg=x",
        r"level=info svc=api msg=x dangling=\(MISSING\)",
        r'level=info svc=api list="\[1, 2\]" k_=v',
    ]
    assert len(out.lines) == len(want)
    for pattern, line in zip(want, out.lines, strict=True):
        assert re.fullmatch(STAMP + " " + pattern + "\n", line), line


def test_default_time_with_caller_trace_and_safe_path() -> None:
    out = Lines()
    logger = log.new(out, caller=True, trace_context=lambda: (1, 2))  # type: ignore[arg-type, return-value]
    line = _line()
    logger.info("msg", "x")
    logger.info("odd")
    for text, n in zip(out.lines, (line, line + 1), strict=True):
        pattern = STAMP + f" level=info caller={HERE}:{n} trace_id=1 span_id=2 "
        assert re.match(pattern, text), text
    assert out.lines[1].endswith(f"odd={log.MISSING}\n")


def test_json_default_time_and_unprintable_key() -> None:
    out = Lines()
    logger = log.new(out, format="json")
    logger.info(Unprintable(), 1, "n", 2)
    record = json.loads(out.lines[0])
    assert list(record) == ["ts", "level", "(UNPRINTABLE Unprintable)", "n"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["ts"])
