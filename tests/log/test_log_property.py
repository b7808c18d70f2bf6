"""Property tests: any key/values logged come back exactly through an independent parser
(`tests.log.helpers.parse_logfmt`, written to go-logfmt's grammar) or ``json.loads``."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs import log
from tests.log.helpers import Lines, parse_logfmt, sanitized

MAX_EXAMPLES = 300


def expected_text(value: object) -> str:
    """How a value reads back from logfmt."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def expected_json(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return value


values = st.one_of(
    st.text(),
    st.text(alphabet=' ="\\\n\r\t\x00\x1f\x7f\x85\u2028é日', max_size=30),
    st.sampled_from(["", "null", " ", "=", '"', "\\", "a=b", 'say "hi"']),
    st.text(min_size=2000, max_size=5000),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)
keyvals = st.lists(st.tuples(st.text(), values), max_size=8)


def _flat(pairs: list[tuple[str, object]]) -> list[object]:
    return [x for pair in pairs for x in pair]


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(keyvals)
def test_logfmt_round_trip(pairs: list[tuple[str, object]]) -> None:
    out = Lines()
    logger = log.new(out, time_format="none", redact=False)
    logger.info(*_flat(pairs))
    (line,) = out.lines
    assert line.endswith("\n")
    assert "\n" not in line[:-1]
    parsed = parse_logfmt(line[:-1])
    want = [("level", "info")] + [(sanitized(k), expected_text(v)) for k, v in pairs]
    assert parsed == want


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(keyvals)
def test_json_round_trip(pairs: list[tuple[str, object]]) -> None:
    out = Lines()
    logger = log.new(out, format="json", time_format="none", redact=False)
    logger.info(*_flat(pairs))
    (line,) = out.lines
    assert line.endswith("\n")
    assert "\n" not in line[:-1]
    parsed = json.loads(line, object_pairs_hook=list)
    want = [("level", "info")] + [(k, expected_json(v)) for k, v in pairs]
    assert [tuple(p) for p in parsed] == want


@settings(max_examples=100, deadline=None)
@given(keyvals, keyvals, keyvals)
def test_context_round_trip(
    prefix: list[tuple[str, object]], ctx: list[tuple[str, object]], call: list[tuple[str, object]]
) -> None:
    """Bound values come back in go-kit's order: prefix, context, call, suffix."""
    out = Lines()
    root = log.new(out, time_format="none", redact=False)
    logger = root.with_(*_flat(ctx)).with_prefix(*_flat(prefix)).with_suffix("end", 1)
    logger.warn(*_flat(call))
    parsed = parse_logfmt(out.lines[0][:-1])
    want = [(sanitized(k), expected_text(v)) for k, v in prefix + ctx + call]
    assert parsed == [("level", "warn"), *want, ("end", "1")]


def test_parser_reads_go_logfmt_examples() -> None:
    """The parser itself, on lines written by hand (as go-logfmt's decoder tests do)."""
    line = 'a=1 b="bar" ƒ=2h3s r="esc\\t" d x=sf  e="quoted \\"x\\"" f= g="\\u00e9\\n"'
    assert parse_logfmt(line) == [
        ("a", "1"),
        ("b", "bar"),
        ("ƒ", "2h3s"),
        ("r", "esc\t"),
        ("d", None),
        ("x", "sf"),
        ("e", 'quoted "x"'),
        ("f", ""),
        ("g", "é\n"),
    ]


def test_lone_surrogates_are_replaced_not_raised() -> None:
    for fmt in ("logfmt", "json"):
        out = Lines()
        logger = log.new(out, format=fmt, time_format="none", redact=False)
        logger.info("k\ud800", "v\udfff", "ok", "\ud83d")
        logger.with_("bound\udc00", "\ud800").info("msg", "x")
        assert len(out.lines) == 2  # Lines decodes strictly: both are valid UTF-8
        text = "".join(out.lines)
        if fmt == "json":
            assert "\ud800" not in text
            first = json.loads(out.lines[0])
            assert first == {"level": "info", "k\ufffd": "v\ufffd", "ok": "\ufffd"}
        else:
            assert parse_logfmt(out.lines[0][:-1]) == [
                ("level", "info"),
                ("k_", "v\ufffd"),
                ("ok", "\ufffd"),
            ]
            assert parse_logfmt(out.lines[1][:-1])[1] == ("bound_", "\ufffd")
