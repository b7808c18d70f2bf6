"""tracer_from_settings: the [tracing] keys, the OTEL_* fallbacks, and errors naming the key."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind

from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.tracing.config import tracer_from_settings
from tests.support.zipkin import Receiver, receiver

__all__ = ["receiver"]


class Lines:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def log(self, *keyvals: object) -> None:
        self.records.append(dict(zip(keyvals[::2], keyvals[1::2], strict=True)))


def test_otel_env_is_honoured(receiver: Receiver) -> None:
    env = {
        "OTEL_SERVICE_NAME": "Billing",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_PROPAGATORS": "b3multi",
        "KITOBS_TRACING_EXPORTER": "zipkin",
        "KITOBS_TRACING_ZIPKIN_ENDPOINT": receiver.url,
        "KITOBS_TRACING_FLUSH_INTERVAL": "0.05",
    }
    tracer = tracer_from_settings(load(env=env, path=None, search=False))
    with tracer.span("root") as root:  # ratio 0: a root is never sampled
        headers: dict[str, str] = {}
        tracer.inject(headers)
    assert not root.sampled
    assert headers == {
        "x-b3-traceid": root.hex_ids()[0],
        "x-b3-spanid": root.hex_ids()[1],
        "x-b3-sampled": "0",
    }
    # A sampled caller is followed (parent-based), and the span reaches Zipkin under OTEL's name.
    incoming = {"x-b3-traceid": "a" * 32, "x-b3-spanid": "b" * 16, "x-b3-sampled": "1"}
    with tracer.span("server", kind=SpanKind.SERVER, context=tracer.extract(incoming)) as span:
        pass
    assert span.sampled
    tracer.shutdown()
    (sent,) = receiver.spans()
    assert sent["localEndpoint"] == {"serviceName": "billing"}
    assert (sent["traceId"], sent["parentId"]) == ("a" * 32, "b" * 16)


def test_kitobs_variables_win_over_otel() -> None:
    env = {
        "OTEL_TRACES_SAMPLER": "always_off",
        "KITOBS_TRACING_SAMPLER": "always_on",
        "OTEL_PROPAGATORS": "b3",
        "KITOBS_TRACING_PROPAGATORS": "tracecontext",
    }
    tracer = tracer_from_settings(load(env=env, path=None, search=False))
    with tracer.span("s") as span:
        headers: dict[str, str] = {}
        tracer.inject(headers)
    assert span.sampled
    assert list(headers) == ["traceparent"]


def test_service_name_defaults_to_service_section() -> None:
    from kitobs.tracing.config import service_name

    settings = load(env={"KITOBS_SERVICE_NAME": "cart"}, path=None, search=False)
    assert service_name(settings) == "cart"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "tracing.sampler"),
        ({"KITOBS_TRACING_SAMPLER_ARG": "2"}, "tracing.sampler_arg"),
        ({"OTEL_PROPAGATORS": "jaeger"}, "tracing.propagators"),
        ({"KITOBS_TRACING_EXPORTER": "jaeger"}, "tracing.exporter"),
        ({"KITOBS_TRACING_QUEUE_SIZE": "0"}, "tracing.queue_size"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        tracer_from_settings(load(env=env, path=None, search=False))
    assert info.value.key is not None
    assert key in info.value.key


def test_none_with_others_and_bad_endpoint_fail_at_build() -> None:
    with pytest.raises(ConfigError, match=r"tracing\.propagators"):
        tracer_from_settings(load(env={"OTEL_PROPAGATORS": "none,b3"}, path=None, search=False))
    env = {"KITOBS_TRACING_EXPORTER": "zipkin", "KITOBS_TRACING_ZIPKIN_ENDPOINT": "127.0.0.1:9411"}
    with pytest.raises(ConfigError, match=r"tracing\.zipkin\.endpoint"):
        tracer_from_settings(load(env=env, path=None, search=False))


def test_log_exporter_writes_span_lines() -> None:
    with pytest.raises(ConfigError, match="needs a logger"):
        tracer_from_settings(load(env={"KITOBS_TRACING_EXPORTER": "log"}, path=None, search=False))
    lines = Lines()
    env = {"KITOBS_TRACING_EXPORTER": "log", "KITOBS_SERVICE_NAME": "cart"}
    tracer = tracer_from_settings(load(env=env, path=None, search=False), logger=lines)
    with tracer.span("outer") as outer, tracer.span("inner", attributes={"k": "v"}) as inner:
        pass
    tracer.shutdown()
    by_name = {r["name"]: r for r in lines.records}
    assert by_name["inner"]["parent_id"] == outer.hex_ids()[1]
    assert by_name["inner"]["trace_id"] == inner.hex_ids()[0]
    assert by_name["inner"]["k"] == "v"
    assert by_name["outer"]["service"] == "cart"
    assert "parent_id" not in by_name["outer"]


def test_exporter_none_keeps_ids_without_export() -> None:
    tracer = tracer_from_settings(load(env={}, path=None, search=False))
    with tracer.span("s") as span:
        headers: dict[str, str] = {}
        tracer.inject(headers)
    assert span.sampled
    assert headers["traceparent"].endswith("-01")
    assert tracer.flush(1.0)
