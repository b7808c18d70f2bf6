"""docs/resilience.md's examples run as written, and the modules' docstring examples pass."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import pytest

import kitobs.circuitbreaker
import kitobs.ratelimit

DOC = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"


def test_the_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no kitobs.toml or pyproject.toml: defaults and overrides only
    for name in [n for n in os.environ if n.startswith("KITOBS_")]:
        monkeypatch.delenv(name)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4
    for block in blocks:
        exec(compile(block, "docs/resilience.md", "exec"), {"__name__": "docs"})


@pytest.mark.parametrize("module", [kitobs.circuitbreaker, kitobs.ratelimit])
def test_the_docstring_examples_pass(module: object) -> None:
    failed, attempted = doctest.testmod(module)  # type: ignore[arg-type]
    assert attempted > 5
    assert failed == 0
