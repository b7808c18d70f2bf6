"""Redaction by one documented rule: the table in docs/log.md, nested values, configuration.

The names checked are read from the table in docs/log.md, so the documentation and the rule
cannot drift apart: every name in its "Redacted" column must be hidden, every name in its "Not
redacted" column written as it is, on every path a key reaches a line by.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from kitobs import log
from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.log import stdlib
from kitobs.redact import Rule, scrub
from tests.log.helpers import Lines, parse_logfmt_strict

SECRET = "hunter2"
DOC = Path(__file__).parents[2] / "docs" / "log.md"


def _table() -> tuple[list[str], list[str]]:
    text = DOC.read_text()
    section = text[text.index("## Redaction") :]
    section = section[: section.index("\n## ", 3)]
    redacted: list[str] = []
    kept: list[str] = []
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Redacted", "---"):
            continue
        redacted += re.findall(r"`([^`]+)`", cells[0])
        kept += re.findall(r"`([^`]+)`", cells[1])
    return redacted, kept


REDACTED, KEPT = _table()


def test_the_table_lists_the_names_users_asked_about() -> None:
    for name in ("accessToken", "secret_key", "aws_secret_access_key", "privateKey", "password"):
        assert name in REDACTED
    for name in ("cache_key", "max_tokens", "token_count", "keyboard", "primary_key"):
        assert name in KEPT
    assert len(REDACTED) >= 30
    assert len(KEPT) >= 15


def _every_path(fmt: str, key: str) -> list[str]:
    """Lines carrying *key* = SECRET by each way a key reaches a line."""
    out = Lines()
    logger = log.new(out, format=fmt, time_format="none")
    logger.info(key, SECRET)  # a compiled shape
    logger.info(1, "x", key, SECRET)  # the general loop (a non-str key)
    logger.with_(key, SECRET).info("msg", "bound")
    logger.with_suffix(key, SECRET).info("msg", "suffix")
    logger.prepare("info", key)(SECRET)
    logger.info("nested", {"outer": {key: SECRET}}, "listed", [{key: SECRET}])
    return out.lines


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("key", REDACTED)
def test_documented_secret_names_are_redacted_everywhere(fmt: str, key: str) -> None:
    assert Rule()(key)
    lines = _every_path(fmt, key)
    assert len(lines) == 6
    assert not [line for line in lines if SECRET in line]
    assert all("[REDACTED]" in line for line in lines)


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("key", KEPT)
def test_documented_other_names_are_not_redacted(fmt: str, key: str) -> None:
    assert not Rule()(key)
    lines = _every_path(fmt, key)
    assert len(lines) == 6
    assert all(SECRET in line and "[REDACTED]" not in line for line in lines)


def test_nested_values_are_redacted_and_stay_readable() -> None:
    value = {"db": {"host": "db1", "password": SECRET}, "replicas": [{"apiKey": SECRET}, 3]}
    out = Lines()
    log.new(out, format="json", time_format="none").info("config", value, "t", (SECRET, 1))
    assert json.loads(out.lines[0]) == {
        "level": "info",
        "config": {"db": {"host": "db1", "password": "[REDACTED]"}, "replicas": [
            {"apiKey": "[REDACTED]"}, 3]},
        "t": [SECRET, 1],  # a plain value in a list has no key: written as it is
    }  # fmt: skip
    assert value["db"] == {"host": "db1", "password": SECRET}  # the caller's dict is untouched
    out = Lines()
    log.new(out, time_format="none").info("config", value)
    (pair,) = parse_logfmt_strict(out.lines[0][:-1])[1:]
    assert pair == ("config", str(Rule().scrub(value)))
    assert SECRET not in out.lines[0]


def test_scrub_returns_the_value_itself_when_nothing_is_secret() -> None:
    value = {"a": [1, {"b": "c"}], "d": ("e",)}
    assert scrub(value, Rule(), "[REDACTED]") is value
    rule = Rule()
    nested = [value, "x"]
    assert rule.scrub(nested) is nested


def test_a_value_containing_itself_is_cut_and_its_secrets_hidden() -> None:
    loop: dict[str, object] = {"password": SECRET, "name": "n"}
    loop["self"] = loop
    listed: list[object] = [{"token": SECRET}]
    listed.append(listed)
    for fmt in ("logfmt", "json"):
        out = Lines()
        log.new(out, format=fmt, time_format="none").info("loop", loop, "listed", listed)
        (line,) = out.lines
        assert SECRET not in line
        assert "[REDACTED]" in line
        assert "name" in line


def test_very_deep_values_are_hidden_rather_than_walked_forever() -> None:
    deep: object = {"password": SECRET}
    for _ in range(200):
        deep = [deep]
    out = Lines()
    log.new(out, format="json", time_format="none").info("deep", deep)
    assert SECRET not in out.lines[0]
    assert json.loads(out.lines[0])["level"] == "info"


def test_extend_replace_allow_and_off() -> None:
    def line(**options: object) -> dict[str, object]:
        out = Lines()
        log.new(out, format="json", time_format="none", **options).info(  # type: ignore[arg-type]
            "card_pin", "1", "password", "p", "next_page_token", "t", "access_token", "a"
        )
        return dict(json.loads(out.lines[0]))

    r = "[REDACTED]"
    assert line(redact_extra_keys=["PIN"]) == {
        "level": "info", "card_pin": r, "password": r, "next_page_token": r, "access_token": r
    }  # fmt: skip
    assert line(redact_keys=["pin"]) == {
        "level": "info", "card_pin": r, "password": "p", "next_page_token": "t", "access_token": "a"
    }  # fmt: skip
    assert line(redact_allow_keys=["Next-Page-Token"]) == {
        "level": "info", "card_pin": "1", "password": r, "next_page_token": "t", "access_token": r
    }  # fmt: skip
    assert line(redact=False)["password"] == "p"


def test_configuration_sets_the_rule(tmp_path: Path) -> None:
    output = tmp_path / "out.log"
    settings = load(
        env={
            "KITOBS_LOG_OUTPUT": str(output),
            "KITOBS_LOG_REDACT_EXTRA_KEYS": "pin",
            "KITOBS_LOG_REDACT_ALLOW_KEYS": "next_page_token",
            "KITOBS_LOG_FORMAT": "json",
            "KITOBS_LOG_TIME_FORMAT": "none",
        },
        path=None,
        search=False,
    )
    logger = log.from_settings(settings.log)
    logger.info("card_pin", "1", "next_page_token", "t", "aws_secret_access_key", "k")
    logger.close()
    assert json.loads(output.read_text()) == {
        "level": "info",
        "card_pin": "[REDACTED]",
        "next_page_token": "t",
        "aws_secret_access_key": "[REDACTED]",
    }


@pytest.mark.parametrize("names", [[""], ["_-. "], [3]])
def test_empty_names_are_refused(names: list[object]) -> None:
    with pytest.raises(ConfigError, match=r"log\.redact_keys"):
        Rule(names)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"log\.redact_allow_keys"):
        Rule(allow=names)  # type: ignore[arg-type]


def test_the_logging_bridge_redacts_nested_values_too() -> None:
    target = logging.getLogger("kitobs.test.redact.bridge")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    target.addHandler(Keep())
    target.propagate = False
    target.setLevel(logging.INFO)
    stdlib.Logger(target).info("msg", "m", "cfg", {"db": {"password": SECRET}}, "secretKey", "s")
    (record,) = records
    assert SECRET not in record.getMessage()
    assert record.keyvals == (  # type: ignore[attr-defined]
        ("msg", "m"), ("cfg", {"db": {"password": "[REDACTED]"}}), ("secretKey", "[REDACTED]"),
    )  # fmt: skip
