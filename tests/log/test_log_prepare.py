"""ContextLogger.prepare: a line with fixed keys, written from its values alone.

The reference for every prepared line is the line the same logger writes through its level
method with the keys and values interleaved: the two must match byte for byte, timestamps aside.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs import log
from kitobs.errors import ConfigError
from kitobs.log import capture
from kitobs.tracing import Tracer, current_ids
from tests.log.helpers import Lines, parse_logfmt

_TS = re.compile(r'^(\{"ts":"|ts=)[0-9T:.Z-]+"?')


def _untimed(line: str) -> str:
    return _TS.sub("<ts>", line, count=1)


def _pairs(keys: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(x for kv in zip(keys, values, strict=True) for x in kv)


CONFIGS: list[dict[str, Any]] = [
    {"format": "json"},
    {"format": "logfmt"},
    {"format": "json", "trace_context": lambda: ("a" * 32, "b" * 16)},
    {"format": "logfmt", "trace_context": lambda: ('not "hex"', "x y")},
    {"format": "json", "trace_context": lambda: None},
    {"format": "json", "redact": True},
    {"format": "logfmt", "time_format": "unix"},
    {"format": "json", "time_format": "none"},
    {"format": "logfmt", "caller": True},
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: ",".join(f"{k}" for k in o))
@pytest.mark.parametrize(
    "values",
    [
        (0.25, "success"),
        (1.5e-06, "business_error"),
        (7, None),
        (float("nan"), True),
        ("multi\nline", b"bytes"),
        (None, 2**80),
    ],
)
def test_prepared_line_matches_the_level_method(options: dict[str, Any], values: Any) -> None:
    out = Lines()
    logger = log.new(out, level="debug", **options).with_("endpoint", "charge")
    logger = logger.with_suffix("host", "web-1")
    keys = ("duration", "password")
    line = logger.prepare("warn", *keys)
    line(*values)
    logger.warn(*_pairs(keys, values))
    prepared, general = out.lines
    if options.get("caller"):  # each line names its own call site; the file must be this one
        here = f"caller=test_log_prepare.py:{sys._getframe().f_lineno - 4}"
        assert here in prepared
        prepared = prepared.replace(here, "caller=X")
        general = re.sub(r"caller=test_log_prepare\.py:\d+", "caller=X", general)
    assert _untimed(prepared) == _untimed(general)


def test_prepared_line_takes_new_value_types_after_the_first_call() -> None:
    out = Lines()
    logger = log.new(out, format="json")
    line = logger.prepare("info", "a", "b")
    line(1, "x")  # compiled for (int, str)
    line("now a string", 2.5)
    line([1, 2], None)
    records = [json.loads(s) for s in out.lines]
    assert [(r["a"], r["b"]) for r in records] == [(1, "x"), ("now a string", 2.5), ([1, 2], None)]


def test_too_few_values_are_marked_missing_and_extra_values_are_kept() -> None:
    out = Lines()
    logger = log.new(out, format="logfmt", time_format="rfc3339_micro")
    line = logger.prepare("info", "a", "b")
    line(1)
    line(1, 2, 3, 4)
    first, second = (dict(parse_logfmt(s)) for s in out.lines)
    assert (first["a"], first["b"]) == ("1", "(MISSING)")
    assert (second["a"], second["b"], second["(EXTRA_0)"], second["(EXTRA_1)"]) == (
        "1",
        "2",
        "3",
        "4",
    )


def test_a_level_below_the_loggers_gives_the_no_op() -> None:
    out = Lines()
    logger = log.new(out, level="warn")
    assert logger.prepare("info", "a") is log.nop_emit
    logger.prepare("error", "a")(1)
    assert len(out.lines) == 1


def test_bad_level_and_bad_key_are_refused_when_prepared() -> None:
    logger = log.new(Lines())
    with pytest.raises(ConfigError, match="not a log level"):
        logger.prepare("loud", "a")
    with pytest.raises(TypeError, match="keys must be str, got 3"):
        logger.prepare("info", "a", 3)  # type: ignore[arg-type]


def test_a_failing_writer_or_value_never_raises_into_the_caller() -> None:
    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("no")

    errors: list[BaseException] = []

    class Broken(Lines):
        def write(self, data: bytes) -> None:
            raise OSError("disk full")

    logger = log.new(Broken(), on_error=errors.append)
    logger.prepare("info", "a")(Boom())
    assert [type(e) for e in errors] == [OSError]
    out = Lines()
    log.new(out, format="json").prepare("info", "a")(Boom())
    assert json.loads(out.lines[0])["a"] == "(UNPRINTABLE Boom)"


def test_a_prepared_line_inside_a_span_carries_its_ids() -> None:
    out = Lines()
    logger = log.new(out, format="json", trace_context=current_ids)
    line = logger.prepare("info", "op")
    tracer = Tracer()
    with tracer.span("charge") as span:
        line("inside")
    line("outside")
    inside, outside = (json.loads(s) for s in out.lines)
    assert (inside["trace_id"], inside["span_id"]) == span.hex_ids()
    assert "trace_id" not in outside
    assert outside["op"] == "outside"


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in ("level", "ts")),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    data=st.data(),
)
def test_any_keys_and_values_round_trip_through_json(keys: list[str], data: Any) -> None:
    values = data.draw(
        st.lists(
            st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.none()),
            min_size=len(keys),
            max_size=len(keys),
        )
    )
    logger, records = capture.new(redact=False, time_format="rfc3339_micro")
    logger.prepare("info", *keys)(*values)
    record = records[0]
    assert [record[k] for k in keys] == values
