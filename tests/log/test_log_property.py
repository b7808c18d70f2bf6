"""Property tests: any key/values logged come back exactly through an independent parser
(`tests.log.helpers.parse_logfmt`, written to go-logfmt's grammar) or ``json.loads``."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs import log
from tests.log.helpers import Lines, parse_logfmt, parse_logfmt_strict, sanitized

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


# --- Every record is one line that parses back exactly --------------------------------------

# Every character str.splitlines() breaks at, the characters logfmt keys may not hold, and quotes.
BREAKERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HOSTILE = BREAKERS + ' ="\\\ufffd\x00\x1f\x7f\t{}[],:é日'
hostile_text = st.text(alphabet=st.sampled_from(HOSTILE), max_size=12)
any_key = st.one_of(st.text(), hostile_text, st.text(alphabet=HOSTILE + "ab", min_size=1))
scalar = st.one_of(values, hostile_text)
nested = st.recursive(
    st.one_of(st.text(), hostile_text, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(), hostile_text), inner)
    ),
    max_leaves=12,
)
any_pairs = st.lists(st.tuples(any_key, scalar), max_size=8)


def one_line(line: str) -> str:
    """The line without its newline, checked to be exactly one line for str.splitlines()."""
    assert line.endswith("\n")
    assert line[:-1].splitlines() == ([line[:-1]] if line[:-1] else [])
    assert len(line.splitlines()) == 1
    return line[:-1]


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(any_pairs, any_pairs)
def test_logfmt_lines_are_whole_and_strictly_valid(
    bound: list[tuple[str, object]], pairs: list[tuple[str, object]]
) -> None:
    """Any keys and values: one line, go-logfmt syntax, values exact, keys sanitised only."""
    out = Lines()
    logger = log.new(out, time_format="none", redact=False).with_(*_flat(bound))
    logger.info(*_flat(pairs))
    logger.prepare("info", *(k for k, _ in pairs))(*(v for _, v in pairs))
    assert len(out.lines) == 2
    want = [("level", "info")] + [(sanitized(k), expected_text(v)) for k, v in bound + pairs]
    for line in out.lines:
        assert parse_logfmt_strict(one_line(line)) == want


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.lists(st.tuples(any_key, st.one_of(scalar, nested)), max_size=8))
def test_json_lines_are_whole_and_exact(pairs: list[tuple[str, object]]) -> None:
    """Any keys and values, nested ones too: one line, and json.loads gives them back exactly."""
    out = Lines()
    logger = log.new(out, format="json", time_format="none", redact=False)
    logger.info(*_flat(pairs))
    logger.with_(*_flat(pairs)).info()
    for line in out.lines:
        parsed = json.loads(one_line(line), object_pairs_hook=list)
        want = [("level", "info")] + [(k, as_json(v)) for k, v in pairs]
        assert [tuple(p) for p in parsed] == want


def as_json(value: object) -> object:
    """What json.loads gives back for a logged value (object_pairs_hook=list, so dicts are
    lists of pairs; tuples come back as lists)."""
    if isinstance(value, dict):
        return [(k, as_json(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return expected_json(value)


def test_each_line_breaking_character_is_escaped_in_json_and_logfmt() -> None:
    for char in BREAKERS:
        text = f"a{char}b"
        for fmt in ("json", "logfmt"):
            out = Lines()
            log.new(out, format=fmt, time_format="none").info(text, text, "d", {text: [text]})
            (line,) = out.lines
            assert char not in line[:-1], (fmt, char)
            assert len(line.splitlines()) == 1


def test_logfmt_keys_go_logfmt_refuses_are_sanitised() -> None:
    out = Lines()
    log.new(out, time_format="none").info("a\ufffdb", 1, "a b", 2, "a=b", 3, 'a"b', 4, "", 5)
    (line,) = out.lines
    assert parse_logfmt_strict(one_line(line)) == [
        ("level", "info"), ("a_b", "1"), ("a_b", "2"), ("a_b", "3"), ("a_b", "4"), ("_", "5"),
    ]  # fmt: skip
