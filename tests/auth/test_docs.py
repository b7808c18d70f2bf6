"""The examples of docs/auth.md run as written and print what the page says they print."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "auth.md"


def examples() -> list[tuple[str, str]]:
    """Each Python block with the output block that follows it."""
    text = DOC.read_text()
    return re.findall(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, flags=re.S)


def test_the_page_has_its_examples() -> None:
    assert len(examples()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_example_prints_what_the_page_says(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # embedded defaults only
    for name in [n for n in os.environ if n.startswith("KITOBS_")]:
        monkeypatch.delenv(name)
    code, printed = examples()[index]
    namespace: dict[str, Any] = {"__name__": "docs_auth"}
    try:
        exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        if "kit" in namespace:
            namespace["kit"].close()
    assert capsys.readouterr().out == printed
