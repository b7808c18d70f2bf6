"""The call shapes of kitobs.log: each writes the line the general encoder writes, byte for byte.

Each test compares lines with a reference built from the codec's general encoder
(`kitobs.log.logfmt.CODEC.other`), which the fast paths must match byte for byte.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs import log
from kitobs.log import _core, logfmt
from kitobs.log import json as kjson
from tests.log.helpers import Lines

CODECS = {"logfmt": logfmt.CODEC, "json": kjson.CODEC}


class Color(enum.IntEnum):
    RED = 1


class Tag(str):
    def __str__(self) -> str:
        return "tag:" + str.__str__(self)


class Loud:
    """A value that counts how often it is rendered."""

    def __init__(self) -> None:
        self.renders = 0

    def __str__(self) -> str:
        self.renders += 1
        return "loud"


def reference(codec: _core.Codec, keyvals: tuple[Any, ...], level: str = "info") -> str:
    """The line the general encoder writes with redaction off and no timestamp."""
    frags = [codec.key_text("level") + codec.string(level)]
    for i in range(0, len(keyvals), 2):
        frags.append(codec.key_text(_core._text(keyvals[i])) + codec.other(keyvals[i + 1]))
    return codec.open_ + codec.sep.join(frags) + codec.close


def plain(fmt: str, **options: Any) -> tuple[log.ContextLogger, Lines]:
    out = Lines()
    options.setdefault("redact", False)
    return log.new(out, format=fmt, time_format="none", **options), out


def shapes(logger: log.ContextLogger) -> dict[tuple[object, ...], Any]:
    return logger._fam.shapes  # type: ignore[attr-defined, no-any-return]


VALUES = (
    "plain",
    "with space",
    "",
    "null",
    'quote " and \\ and \n',
    "é ✓",
    0,
    -7,
    2**70,
    0.25,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
    b"bytes \xff",
    Color.RED,
    Tag("t"),
    [1, "a"],
    {"k": 1.5},
    (1, 2),
    3 + 4j,
)


@pytest.mark.parametrize("fmt", CODECS)
def test_a_shape_is_compiled_once_and_encodes_like_the_general_encoder(fmt: str) -> None:
    logger, out = plain(fmt)
    keyvals = ("msg", "hello", "user", 7, "path", "/users/7", "ratio", 0.25, "ok", True)
    for _ in range(3):
        logger.info(*keyvals)
    body = shapes(logger)[keyvals[::2]]
    assert body is not logger._fam.generic  # type: ignore[attr-defined]
    assert out.lines == [reference(CODECS[fmt], keyvals)] * 3


@pytest.mark.parametrize("fmt", CODECS)
@pytest.mark.parametrize("first", VALUES, ids=repr)
def test_a_compiled_shape_takes_any_type_later(fmt: str, first: object) -> None:
    """A shape compiled for one value type still encodes every other type right."""
    logger, out = plain(fmt)
    logger.info("k", first, "n", 1)
    for value in VALUES:
        logger.info("k", value, "n", value)
    want = [
        reference(CODECS[fmt], ("k", v, "n", w)) for v, w in [(first, 1)] + [(v, v) for v in VALUES]
    ]
    assert out.lines == want


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=12),
                st.integers(),
                st.floats(),
                st.booleans(),
                st.none(),
                st.binary(max_size=4),
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(sorted(CODECS)),
)
def test_repeated_shapes_with_any_values_match_the_reference(
    calls: list[list[object]], fmt: str
) -> None:
    logger, out = plain(fmt)
    keys = ("a", "b c", "d=")
    want = []
    for values in calls:
        keyvals = tuple(x for pair in zip(keys, values, strict=True) for x in pair)
        logger.info(*keyvals)
        want.append(reference(CODECS[fmt], keyvals).encode("utf-8", "surrogatepass"))
    if any(_core._SURROGATES.search(line.decode("utf-8", "surrogatepass")) for line in want):
        return  # lone surrogates are replaced on the safe path: tested in test_log_property
    assert [line.encode() for line in out.lines] == want


KEYS = ['"', "'", "'''", "{x}", "}", "{", "\\", "\n", "%s", "é", "a'); import os; ('", "x\\'y"]


@pytest.mark.parametrize("fmt", CODECS)
def test_keys_are_data_never_code(fmt: str) -> None:
    logger, out = plain(fmt)
    keyvals = tuple(x for i, key in enumerate(KEYS) for x in (key, i))
    logger.info(*keyvals)
    assert keyvals[::2] in shapes(logger)
    assert out.lines == [reference(CODECS[fmt], keyvals)]
    if fmt == "json":
        assert list(json.loads(out.lines[0])) == ["level", *dict.fromkeys(KEYS)]


def test_redacted_keys_in_a_shape_never_render_their_value() -> None:
    out = Lines()
    logger = log.new(out, time_format="none")
    loud = Loud()
    logger.info("user", "ann", "password", "hunter2")
    logger.info("user", "bob", "password", loud)
    logger.info("user", "cy", "password", 12)
    assert out.lines == [
        "level=info user=ann password=[REDACTED]\n",
        "level=info user=bob password=[REDACTED]\n",
        "level=info user=cy password=[REDACTED]\n",
    ]
    assert loud.renders == 0


def test_odd_and_unhashable_calls_after_a_compiled_shape() -> None:
    logger, out = plain("logfmt")
    logger.info("a", 1, "b", 2)
    logger.info("a", 1, "b")
    logger.info(["k"], 1, "b", 2)
    logger.info()
    assert out.lines == [
        "level=info a=1 b=2\n",
        f"level=info a=1 b={log.MISSING}\n",
        "level=info ['k']=1 b=2\n",
        "level=info\n",
    ]


def test_equal_keys_of_other_types_keep_their_own_text() -> None:
    """1, 1.0 and True are one dict key; each must still print as itself."""
    logger, out = plain("logfmt")
    for key in (1, True, 1.0, 1):
        logger.info(key, "v")
    assert out.lines == [
        "level=info 1=v\n",
        "level=info True=v\n",
        "level=info 1.0=v\n",
        "level=info 1=v\n",
    ]


def test_shapes_past_the_limit_use_the_general_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "_SHAPES_MAX", 3)
    logger, out = plain("logfmt")
    for i in range(6):
        logger.info(f"k{i}", i, "same", "x y")
    many = tuple(x for i in range(_core._SHAPE_PAIRS_MAX + 1) for x in (f"p{i}", i))
    logger.info(*many)
    assert len(shapes(logger)) == 3
    want = [f'level=info k{i}={i} same="x y"\n' for i in range(6)]
    want.append(reference(logfmt.CODEC, many))
    assert out.lines == want


def test_bound_context_and_suffix_wrap_the_compiled_body() -> None:
    logger, out = plain("json")
    req = logger.with_prefix("svc", "api").with_("req", 7).with_suffix("host", "a1")
    req.warn("msg", "slow", "ms", 12.5)
    logger.warn("msg", "slow", "ms", 3.0)
    assert [json.loads(line) for line in out.lines] == [
        {"level": "warn", "svc": "api", "req": 7, "msg": "slow", "ms": 12.5, "host": "a1"},
        {"level": "warn", "msg": "slow", "ms": 3.0},
    ]


def test_threads_compiling_shapes_at_once_write_whole_right_lines() -> None:
    logger, out = plain("logfmt")  # Lines appends each write: atomic under the GIL

    def work(t: int) -> None:
        for i in range(300):
            logger.info(f"t{t}", i, f"s{i % 40}", "v")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    want = sorted(f"level=info t{t}={i} s{i % 40}=v\n" for t in range(4) for i in range(300))
    assert sorted(out.lines) == want


# --- The clock --------------------------------------------------------------------------------

STAMP = re.compile(r"ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z ")


def _micros(text: str) -> int:
    when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_timestamps_lie_between_the_clock_readings_around_the_call(fmt: str) -> None:
    out = Lines()
    logger = log.new(out, format=fmt, caller=fmt == "json")
    bounds = []
    for _ in range(2000):
        before = time.time_ns() // 1000
        logger.info("n", 1)
        bounds.append((before, time.time_ns() // 1000))
    for line, (before, after) in zip(out.lines, bounds, strict=True):
        text = json.loads(line)["ts"][:-1] if fmt == "json" else STAMP.match(line)[1]  # type: ignore[index]
        assert before <= _micros(text) <= after, line


@pytest.mark.parametrize(
    "ns",
    [
        1_700_000_000_000_000_000,
        1_700_000_000_999_999_999,
        1_700_000_001_000_000_000,
        1_700_000_000_123_456_789,
        1_799_999_999_999_999_000,
        951_782_400_000_001_000,  # 2000-02-29
    ],
)
def test_clock_formats_each_millisecond_and_second_edge(ns: int) -> None:
    clock = _core._Clock("ts=", "Z")
    for t in (ns, ns - 1000, ns + 1000, ns):  # forwards and backwards across the edges
        start, end, text = clock.refresh(t)
        assert start <= t < end
        got = text + _core._DIGITS3[(t - start) // 1000] + clock.tail
        when = dt.datetime.fromtimestamp(t // 1000 / 1e6, dt.UTC)
        assert got == "ts=" + when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def test_a_clock_state_from_another_millisecond_is_not_trusted() -> None:
    """A thread may see a state another thread made for a later millisecond: it refreshes."""
    clock = _core._Clock("ts=", "Z")
    future = time.time_ns() + 5 * 10**9
    clock.refresh(future)
    before = time.time_ns() // 1000
    text = clock.stamp()
    after = time.time_ns() // 1000
    assert before <= _micros(text[3:-1]) <= after


def test_general_loop_redacts_and_caches_only_str_keys() -> None:
    """A non-str key sends the call to the general loop, which redacts as the shapes do."""
    out = Lines()
    logger = log.new(out, time_format="none")
    for _ in range(2):
        logger.info(7, "a", "api_key", "k-123", "user", "ann")
    assert out.lines == ["level=info 7=a api_key=[REDACTED] user=ann\n"] * 2
    assert shapes(logger) == {}


class Failing:
    def write(self, data: bytes) -> None:
        raise OSError("disk full")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("options", [{}, {"caller": True}, {"time_format": "unix"}])
def test_a_failing_writer_goes_to_the_handler_on_every_path(options: dict[str, Any]) -> None:
    errors: list[BaseException] = []
    logger = log.new(Failing(), on_error=errors.append, **options)
    logger.info("msg", "x")
    logger.info("msg")
    assert [str(e) for e in errors] == ["disk full", "disk full"]


def test_trusted_hex_ids_are_written_as_the_checked_path_writes_them() -> None:
    # A hook marked ``hex_ids = True`` skips the check and the encoder; for hex ids the line
    # must be exactly what the checked path writes, in both formats, with bound context.
    def ids() -> tuple[str, str]:
        return "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    def trusted() -> tuple[str, str]:
        return ids()

    trusted.hex_ids = True  # type: ignore[attr-defined]
    for fmt in ("json", "logfmt"):
        lines = []
        for hook in (ids, trusted):
            out = Lines()
            logger = log.new(out, format=fmt, trace_context=hook).with_("svc", "api")
            logger.info("msg", "hi", "n", 1)
            lines.append(re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<ts>", out.lines[0]))
        assert lines[0] == lines[1]
        assert "4bf92f3577b34da6a3ce929d0e0e4736" in lines[1]
    assert log.new(Lines(), trace_context=trusted)._fam.trusted_ids is True  # type: ignore[attr-defined]
    assert log.new(Lines(), trace_context=ids)._fam.trusted_ids is False  # type: ignore[attr-defined]
