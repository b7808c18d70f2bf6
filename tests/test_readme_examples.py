"""The README's Python examples run as written, and do what the README says they do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_tour_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no kitobs.toml or pyproject.toml: embedded defaults only
    for name in [n for n in __import__("os").environ if n.startswith("KITOBS_")]:
        monkeypatch.delenv(name)
    blocks = python_blocks()
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {"__name__": "readme"}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
        out = capsys.readouterr().out
        kit = namespace["kit"]
        exposition = kit.metrics.exposition().decode()
    finally:
        if "kit" in namespace:
            namespace["kit"].close()

    # 1. The decorated function logged one line inside its span, and was counted.
    charge_lines = [line for line in out.splitlines() if "endpoint=charge" in line]
    assert len(charge_lines) == 1, out
    assert "outcome=success" in charge_lines[0]
    assert re.search(r"trace_id=[0-9a-f]{32}", charge_lines[0])
    assert namespace["charge"].__doc__ == "Charge an order and return the receipt id."
    assert (
        'kitobs_endpoint_duration_seconds_count{endpoint="charge",outcome="success"} 1'
        in exposition
    )
    # 2. The Flask view is labelled with its route template, and /metrics is served by the app.
    flask_series = (
        'http_server_request_duration_seconds_count{http_request_method="GET",'
        'http_route="/users/<int:user_id>",http_response_status_code="200",url_scheme="http"} 1'
    )
    assert flask_series in out
    # The scrape of /metrics is not a request: no unmatched series, and one access line only.
    assert 'http_route="unmatched"' not in out
    access = [line for line in out.splitlines() if "transport=http" in line]
    assert len(access) == 1, out
    assert "route=/users/<int:user_id>" in access[0]
    assert "status=200" in access[0]
    # 3. The user's own metrics.
    assert 'jobs_total{queue="fast"} 1' in exposition
    assert "job_duration_seconds_count 1" in exposition
