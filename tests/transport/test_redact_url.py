"""Credentials never reach a span's url.full (and so never the span log or Zipkin)."""

from __future__ import annotations

import pytest

from kitobs.transport.http import redact_url


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://h/x", "http://h/x"),
        ("http://h/x?q=1", "http://h/x?q=1"),
        ("http://u:pw@h:8/x?q=1", "http://h:8/x?q=1"),
        ("http://h/x?token=t&q=1", "http://h/x?token=REDACTED&q=1"),
        (
            "http://h/x?X-Api-Key=k&access_token=a",
            "http://h/x?X-Api-Key=REDACTED&access_token=REDACTED",
        ),
        ("http://h/x?password=p#frag", "http://h/x?password=REDACTED#frag"),
        ("http://h/x?sig=s&Signature=z", "http://h/x?sig=REDACTED&Signature=REDACTED"),
        ("http://h/x?tokens=1", "http://h/x?tokens=1"),
        ("http://h/x?flag&token", "http://h/x?flag&token"),
    ],
)
def test_redact_url(url: str, want: str) -> None:
    assert redact_url(url) == want
