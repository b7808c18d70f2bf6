"""Span attributes are redacted by the log rule before export: secrets never reach a collector.

Checked through the real Zipkin encoding and HTTP path, against the loopback collector that
validates every body against the Zipkin v2 spec.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.trace import SpanKind

from kitobs.config import load
from kitobs.redact import Rule
from kitobs.tracing import Tracer, zipkin
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing.config import redact_rule, tracer_from_settings
from tests.support.zipkin import Receiver, receiver, validate

__all__ = ["receiver"]  # the fixture, re-exported for pytest

SECRET = "hunter2"
SECRETS = {
    "password": SECRET,
    "authorization": f"Bearer {SECRET}",
    "api_key": SECRET,
    "http.request.header.cookie": [f"sid={SECRET}"],
    "db.credentials": SECRET,
}
PLAIN = {"max_tokens": 512, "cache_key": "user:7", "token_count": 3, "http.route": "/items"}


def _spans(tracer: Tracer) -> None:
    with tracer.span("login", kind=SpanKind.SERVER, attributes={**SECRETS, **PLAIN}) as span:
        span.set_attribute("accessToken", SECRET)
        span.add_event("retry", {"privateKey": SECRET, "attempt": 2})
    with tracer.span("plain", attributes=PLAIN):
        pass


def _bodies(rec: Receiver, processor: BatchProcessor) -> list[dict[str, Any]]:
    assert processor.flush(10.0)
    spans = rec.wait_for(2)
    for body in rec.bodies:
        validate(body)
        assert SECRET.encode() not in body
    return spans


def test_secret_attributes_never_reach_zipkin(receiver: Receiver) -> None:
    processor = BatchProcessor(
        zipkin.Exporter(receiver.url, service_name="shop"), flush_interval=0.05
    )
    _spans(Tracer(processor=processor))
    by_name = {s["name"]: s for s in _bodies(receiver, processor)}
    processor.shutdown()
    tags = by_name["login"]["tags"]
    for key in [*SECRETS, "accessToken"]:
        assert tags[key] == "[REDACTED]"
    assert tags["max_tokens"] == "512"
    assert tags["cache_key"] == "user:7"
    assert tags["token_count"] == "3"
    assert tags["http.route"] == "/items"
    (annotation,) = by_name["login"]["annotations"]
    assert json.loads(annotation["value"]) == {"retry": {"privateKey": "[REDACTED]", "attempt": 2}}
    assert by_name["plain"]["tags"] == {k: str(v) for k, v in PLAIN.items()}


def test_configuration_extends_and_turns_off_span_redaction(receiver: Receiver) -> None:
    env = {
        "KITOBS_TRACING_EXPORTER": "zipkin",
        "KITOBS_TRACING_ZIPKIN_ENDPOINT": receiver.url,
        "KITOBS_TRACING_FLUSH_INTERVAL": "0.05",
        "KITOBS_LOG_REDACT_EXTRA_KEYS": "pin",
        "KITOBS_LOG_REDACT_ALLOW_KEYS": "api_key",
    }
    tracer = tracer_from_settings(load(env=env, path=None, search=False))
    with tracer.span("pay", attributes={"card_pin": "1234", "api_key": "k", "password": "p"}):
        pass
    assert tracer.flush(10.0)
    (span,) = receiver.wait_for(1)
    tracer.shutdown()
    assert span["tags"] == {"card_pin": "[REDACTED]", "api_key": "k", "password": "[REDACTED]"}
    off = load(env={**env, "KITOBS_LOG_REDACT": "false"}, path=None, search=False)
    assert redact_rule(off) is None


def test_a_processor_without_a_rule_exports_attributes_as_they_are(receiver: Receiver) -> None:
    processor = BatchProcessor(
        zipkin.Exporter(receiver.url, service_name="shop"), flush_interval=0.05, redact=None
    )
    with Tracer(processor=processor).span("raw", attributes={"password": "p"}):
        pass
    assert processor.flush(10.0)
    (span,) = receiver.wait_for(1)
    processor.shutdown()
    assert span["tags"] == {"password": "p"}


def test_a_span_without_secrets_keeps_its_attributes_dict() -> None:
    from kitobs.tracing._batch import redact_spans
    from kitobs.tracing._span import Span

    span = Span("s", 1, 2, attributes={"http.route": "/a"})
    span.end()
    before = span.attributes
    redact_spans([span], Rule())
    assert span.attributes is before


def _zipkin_spans(body: bytes) -> dict[str, dict[str, Any]]:
    validate(body)
    return {s["name"]: s for s in json.loads(body)}


def test_zipkin_redacts_while_encoding_batch_after_batch() -> None:
    from kitobs.tracing._span import Span

    rule = Rule(extra=["address"])
    sent: list[bytes] = []

    class Sink(zipkin.Exporter):
        def _post(self, body: bytes, timeout: float) -> None:
            sent.append(body)

    exporter = Sink(service_name="shop")
    for batch in range(3):  # the first batch learns the keys, the later ones use what it kept
        span = Span("call", 1, 2 + batch, kind=SpanKind.CLIENT, attributes={**SECRETS, **PLAIN})
        span.set_attribute("server.address", "db.internal")
        span.add_event("retry", {"privateKey": SECRET, "attempt": 2})
        span.end()
        exporter.export_redacted([span], 1.0, rule)
        assert span.attributes is not None
        assert span.attributes["password"] == SECRET  # the span itself is left as it is
    for body in sent:
        assert SECRET.encode() not in body
        assert b"db.internal" not in body
        (out,) = _zipkin_spans(body).values()
        assert out["remoteEndpoint"] == {"serviceName": "[redacted]"}
        for key in SECRETS:
            assert out["tags"][key] == "[REDACTED]"
        assert out["tags"]["max_tokens"] == "512"
        assert json.loads(out["annotations"][0]["value"]) == {
            "retry": {"privateKey": "[REDACTED]", "attempt": 2}
        }
    exporter.export([span], 1.0)  # no rule: as they are
    assert SECRET.encode() in sent[-1]


def test_zipkin_encode_redacts_past_its_key_cache() -> None:
    from kitobs.tracing._span import Span

    spans = []
    for i in range(5000):  # more distinct keys than are kept
        span = Span(f"s{i}", 1, i + 1, attributes={f"k{i}": 1, "password": SECRET, f"t{i}": "x"})
        span.end()
        spans.append(span)
    body = zipkin.encode(spans, "shop", redact=Rule())
    assert SECRET.encode() not in body
    out = _zipkin_spans(body)
    assert out["s4999"]["tags"] == {"k4999": "1", "password": "[REDACTED]", "t4999": "x"}
    assert SECRET.encode() in zipkin.encode(spans[:1], "shop")


def test_an_exporter_that_redacts_itself_gets_the_rule_and_others_redacted_spans() -> None:
    from collections.abc import Sequence

    from kitobs.tracing._span import Span

    rule = Rule()
    got: list[tuple[str, Rule | None, Any]] = []

    class Redacting:
        def export(self, spans: Sequence[Span], timeout: float) -> None:
            got.append(("export", None, [s.attributes for s in spans]))

        def export_redacted(self, spans: Sequence[Span], timeout: float, r: Rule | None) -> None:
            got.append(("export_redacted", r, [dict(s.attributes or {}) for s in spans]))

    class Plain:
        def export(self, spans: Sequence[Span], timeout: float) -> None:
            got.append(("export", None, [dict(s.attributes or {}) for s in spans]))

    for exporter in (Redacting(), Plain()):
        processor = BatchProcessor(exporter, flush_interval=0.05, redact=rule)
        with Tracer(processor=processor).span("s", attributes={"api_key": SECRET, "n": 1}):
            pass
        assert processor.flush(10.0)
        processor.shutdown()
    assert got == [
        ("export_redacted", rule, [{"api_key": SECRET, "n": 1}]),
        ("export", None, [{"api_key": "[REDACTED]", "n": 1}]),
    ]
