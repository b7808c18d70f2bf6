"""docs/sd.md's runnable examples run as written, and kitobs.sd's docstring example passes."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import pytest

import kitobs.sd

DOC = Path(__file__).resolve().parents[2] / "docs" / "sd.md"


def test_the_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KITOBS_")]:
        monkeypatch.delenv(name)
    # ```python blocks run; ```py ones need a server (DNS, etcd, ZooKeeper) and are shown only.
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    for block in blocks:
        exec(compile(block, "docs/sd.md", "exec"), {"__name__": "docs"})


def test_the_docstring_example_passes() -> None:
    failed, attempted = doctest.testmod(kitobs.sd)
    assert attempted >= 5
    assert failed == 0
