"""Error messages name configuration keys through the schema (`kitobs.config.key_name`).

A key spelt out as a string, ``key="tracing.sampler"``, goes stale silently when the schema
renames or moves it; ``key_name(TracingSettings, "sampler")`` fails loudly instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kitobs
from kitobs.config import key_name

PACKAGE = Path(kitobs.__file__).parent


def literal_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """The ``key=`` keyword arguments written as a dotted string literal, with their lines."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                value = kw.value
                if (
                    kw.arg == "key"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and "." in value.value
                ):
                    found.append((node.lineno, value.value))
    return found


def test_no_module_spells_a_configuration_key_as_a_literal() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: key={key!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, key in literal_keys(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], "use kitobs.config.key_name(Section, 'field'):\n" + "\n".join(offenders)


def test_the_check_sees_a_literal_key() -> None:
    tree = ast.parse('raise ConfigError("bad", key="tracing.sampler", value=1)')
    assert literal_keys(tree) == [(1, "tracing.sampler")]
    assert literal_keys(ast.parse('f(key=key_name(S, "sampler"), other="a.b")')) == []


def test_schema_names_match_the_keys_users_write() -> None:
    from kitobs.config import HttpTransportSettings, LogSettings, TracingSettings, ZipkinSettings

    assert key_name(TracingSettings, "sampler") == "tracing.sampler"
    assert key_name(ZipkinSettings, "timeout") == "tracing.zipkin.timeout"
    assert key_name(LogSettings, "output") == "log.output"
    assert key_name(HttpTransportSettings, "exclude_paths") == "transport.http.exclude_paths"
