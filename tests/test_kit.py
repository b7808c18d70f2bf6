"""Tests for kitobs.Kit: built from configuration, parts wired together, closed in order."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import kitobs
from kitobs import kit as kit_module
from kitobs.errors import ConfigError
from kitobs.kit import Kit


@pytest.fixture
def no_default() -> Iterator[None]:
    kit_module.reset_default()
    yield
    kit_module.reset_default()


def memory_kit(tmp_path: Path, **extra: object) -> Kit:
    overrides: dict[str, object] = {
        "service.name": "checkout",
        "log.output": str(tmp_path / "out.log"),
        "log.format": "json",
        "metrics.backend": ["memory"],
        "tracing.exporter": "none",
    }
    overrides.update(extra)
    return Kit.from_config(env={}, overrides=overrides)


def test_kit_parts_come_from_configuration(tmp_path: Path) -> None:
    with memory_kit(tmp_path) as kit:
        assert kit.settings.service.name == "checkout"
        kit.logger.info("msg", "hello", "n", 7)
        jobs = kit.metrics.counter("jobs", help="Jobs run.", labels=("queue",))
        jobs.labels("fast").add(2)
        kit.metrics.assert_counter("jobs", 2.0, queue="fast")  # type: ignore[attr-defined]
    line = json.loads((tmp_path / "out.log").read_text().splitlines()[0])
    assert line["msg"] == "hello"
    assert line["n"] == 7
    assert line["level"] == "info"


def test_log_lines_inside_a_span_carry_its_ids(tmp_path: Path) -> None:
    with memory_kit(tmp_path) as kit:
        with kit.tracer.span("work") as span:
            kit.logger.info("msg", "inside")
            trace_id, span_id = span.hex_ids()
        kit.logger.info("msg", "outside")
    inside, outside = (json.loads(x) for x in (tmp_path / "out.log").read_text().splitlines())
    assert inside["trace_id"] == trace_id
    assert inside["span_id"] == span_id
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert "trace_id" not in outside


def test_close_is_idempotent_and_closes_the_log(tmp_path: Path) -> None:
    kit = memory_kit(tmp_path, **{"log.buffered": True})
    kit.logger.info("msg", "buffered")
    kit.close()
    kit.close()
    assert "buffered" in (tmp_path / "out.log").read_text()


def test_bad_configuration_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="KITOBS_METRICS_BACKEND"):
        Kit.from_config(env={"KITOBS_METRICS_BACKEND": "graphite"})


def test_default_is_built_once_from_configuration_and_replaceable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_default: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KITOBS_METRICS_BACKEND", "memory")
    monkeypatch.setenv("KITOBS_SERVICE_NAME", "from-env")
    first = kit_module.default()
    assert first is kit_module.default()
    assert first.settings.service.name == "from-env"
    replacement = memory_kit(tmp_path)
    kit_module.set_default(replacement)
    assert kit_module.default() is replacement
    kit_module.reset_default()
    rebuilt = kit_module.default()
    assert rebuilt is not first
    assert rebuilt is not replacement
    for k in (first, replacement, rebuilt):
        k.close()


def test_kit_is_exported_at_the_top() -> None:
    assert kitobs.Kit is Kit
