"""Configuration: one schema, one loader, every part of kitobs.

The schema is the set of frozen dataclasses below: a section is a dataclass, a key is a field,
a subsection is a field whose type is another section. Each field's metadata carries its help
text and, where the values are a closed set, the allowed values. The loader, the environment
variable names and the reference in ``docs/configuration.md`` all derive from it, so they cannot
drift.

Sources, each overriding the one before:

1. built-in defaults (the dataclass defaults);
2. a TOML file: the ``path`` argument (``--config FILE``), else ``$KITOBS_CONFIG``, else
   ``./kitobs.toml``, else ``[tool.kitobs]`` in ``./pyproject.toml``;
3. environment variables ``KITOBS_<SECTION>_<KEY>``, e.g. ``KITOBS_LOG_LEVEL=debug`` or
   ``KITOBS_METRICS_STATSD_ADDRESS=127.0.0.1:8125`` (lists comma-separated, labels as
   ``k=v,k2=v2``, durations in seconds); a few standard ``OTEL_*`` variables are honoured when the
   ``KITOBS_`` equivalent is unset;
4. explicit arguments: ``load(overrides={"log.level": "debug"})``.

Unknown keys, unknown ``KITOBS_*`` variables and bad values raise `kitobs.errors.ConfigError`.

Example::

    >>> settings = load(env={"KITOBS_LOG_FORMAT": "json"}, path=None, search=False)
    >>> settings.log.format
    'json'
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
import typing
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from kitobs.errors import ConfigError

__all__ = [
    "Settings",
    "ServiceSettings",
    "KitSettings",
    "LogSettings",
    "MetricsSettings",
    "PrometheusSettings",
    "StatsdSettings",
    "ExpvarSettings",
    "PushgatewaySettings",
    "OtelMetricsSettings",
    "TracingSettings",
    "ZipkinSettings",
    "OtlpSettings",
    "TransportSettings",
    "HttpTransportSettings",
    "GrpcTransportSettings",
    "NatsTransportSettings",
    "AmqpTransportSettings",
    "CircuitBreakerSettings",
    "RateLimitSettings",
    "AuthSettings",
    "BasicAuthSettings",
    "JwtAuthSettings",
    "SdSettings",
    "KeyInfo",
    "load",
    "all_keys",
    "reference",
    "env_name",
    "key_name",
    "DEFAULT_REDACT_KEYS",
    "DEFAULT_EXCLUDE_PATHS",
    "DURATION_BUCKETS",
]

_T = TypeVar("_T")

#: Names whose values the redactor hides, in log lines and span attributes: a key is redacted when,
#: lowercased and without ``_``, ``-``, ``.`` and spaces, it ends with one of them (see
#: `kitobs.redact`).
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "signingkey",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "sessionid",
    "jwt",
)

#: Paths the HTTP server transports do not record: the exposition pages' default paths.
DEFAULT_EXCLUDE_PATHS: tuple[str, ...] = ("/metrics", "/debug/vars")

#: Buckets for durations in seconds (OpenTelemetry's advice and prometheus_client's default).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)


def _key(
    default: Any,
    doc: str,
    *,
    choices: tuple[str, ...] | None = None,
    duration: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    otel_env: str | None = None,
    otel_fallback: str | None = None,
    headers: bool = False,
) -> Any:
    """Declare one configuration key: its default, help text and constraints.

    *otel_fallback* is a second standard variable read when *otel_env* is unset; *headers* makes
    a table of HTTP headers (any header names, OpenTelemetry's ``k=v,k2=v2`` form in variables).
    """
    meta = {
        "doc": doc,
        "choices": choices,
        "duration": duration,
        "minimum": minimum,
        "maximum": maximum,
        "otel_env": otel_env,
        "otel_fallback": otel_fallback,
        "headers": headers,
    }
    if isinstance(default, dict):
        frozen = dict(default)
        return field(default_factory=lambda: dict(frozen), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type[_T]) -> Any:
    return field(default_factory=cls, metadata={"doc": cls.__doc__ or ""})


# --------------------------------------------------------------------------------------------
# The schema.


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """ServiceSettings names the service, e.g. ``[service] name = "checkout"``."""

    name: str = _key("unknown_service", "Service name used in logs, spans and dashboards.")
    labels: dict[str, str] = _key(
        {},
        "Common labels added to every metric series, e.g. env=prod,version=1.2.",
    )


@dataclass(frozen=True, slots=True)
class KitSettings:
    """KitSettings cover the Kit as a whole, e.g. ``[kit] exit_timeout = 1.5``."""

    exit_timeout: float = _key(
        3.0,
        "Seconds the flush at exit or SIGTERM may take in all: spans, statsd lines, the last "
        "push and log buffers together; what is still unsent then is dropped and reported.",
        duration=True,
        minimum=0.0,
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    """LogSettings configures the default logger, e.g. ``[log] format = "json"``."""

    level: str = _key(
        "info",
        "Lowest level written.",
        choices=("debug", "info", "warn", "error"),
    )
    format: str = _key("logfmt", "Line encoding.", choices=("logfmt", "json"))
    output: str = _key(
        "stderr",
        "Where lines go: stderr, stdout (in any case), or a file path (appended to); "
        "./stderr is a file of that name.",
    )
    level_key: str = _key("level", "Name of the level key, e.g. severity for GCP.")
    time_key: str = _key("ts", "Name of the timestamp key.")
    time_format: str = _key(
        "rfc3339_micro",
        "Timestamp format, in UTC.",
        choices=("rfc3339_micro", "rfc3339", "unix", "unix_ms", "none"),
    )
    caller: bool = _key(False, "Add caller=file:line naming the call site.")
    redact: bool = _key(True, "Replace the values of credential-like keys with a marker.")
    redact_keys: tuple[str, ...] = _key(
        DEFAULT_REDACT_KEYS,
        "Names whose keys are redacted (a key ending with one, ignoring case and _ - . and "
        "spaces), in log lines and span attributes; replaces the built-in list.",
    )
    redact_extra_keys: tuple[str, ...] = _key((), "Names to redact in addition to redact_keys.")
    redact_allow_keys: tuple[str, ...] = _key(
        (),
        "Keys never redacted, compared whole ignoring case and _ - . and spaces, "
        "e.g. next_page_token.",
    )
    nonblocking: bool = _key(
        False,
        "Write from a background thread through a bounded queue; a full queue drops and counts.",
    )
    queue_size: int = _key(10000, "Queue length of the non-blocking writer.", minimum=1)
    buffered: bool = _key(
        False,
        "Buffer output and flush on exit instead of flushing every line.",
    )


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """PrometheusSettings configure the Prometheus backend, e.g. ``listen = "127.0.0.1:9464"``."""

    listen: str = _key(
        "",
        "host:port of a standalone exposition server; empty mounts path on the app's own server.",
    )
    path: str = _key("/metrics", "HTTP path of the exposition.")
    exemplars: bool = _key(True, "Attach trace ids of sampled requests to histogram buckets.")
    multiprocess_dir: str = _key(
        "",
        "Directory the workers of a multi-process server share; empty picks one per server"
        " when [metrics] multiprocess finds workers.",
    )


@dataclass(frozen=True, slots=True)
class StatsdSettings:
    """StatsdSettings configure the statsd backend, e.g. ``flavor = "dogstatsd"``."""

    address: str = _key(
        "127.0.0.1:8125",
        "host:port of the statsd server, or a socket path with transport=unix or unixgram.",
    )
    transport: str = _key(
        "udp",
        "Socket type, by Go's names: unix is a Unix stream socket, unixgram a datagram one.",
        choices=("udp", "tcp", "unix", "unixgram"),
    )
    flavor: str = _key(
        "etsy",
        "Line dialect: etsy (no tags), dogstatsd (|#k:v tags), telegraf (,k=v tags).",
        choices=("etsy", "dogstatsd", "telegraf"),
    )
    prefix: str = _key("", "Prefix for every metric name, joined with a dot.")
    dogstatsd_histogram: str = _key(
        "h",
        "With flavor=dogstatsd: line type of histograms not in seconds, h (histogram) or d "
        "(distribution); durations are always ms timers.",
        choices=("h", "d"),
    )
    etsy_labels: str = _key(
        "append",
        "With flavor=etsy: append label values to the name in declared order, or drop them.",
        choices=("append", "drop"),
    )
    flush_interval: float = _key(
        1.0, "Seconds between flushes of the line buffer.", duration=True, minimum=0.001
    )
    packet_size: int = _key(1432, "Largest datagram or write, in bytes.", minimum=64)
    sample_rate: float = _key(
        1.0,
        "Default sampling rate for counters and histograms, above 0 and at most 1.",
        minimum=0.0,
        maximum=1.0,
    )
    queue_size: int = _key(
        10000,
        "Lines held for a slow or unreachable server, and observations per histogram series "
        "between flushes, before dropping (counted).",
        minimum=1,
    )
    resolve_interval: float = _key(
        60.0,
        "Seconds between DNS re-resolutions of the host; 0 resolves once.",
        duration=True,
        minimum=0.0,
    )


@dataclass(frozen=True, slots=True)
class ExpvarSettings:
    """ExpvarSettings configure the JSON page, e.g. ``quantiles = [0.5, 0.99]``."""

    path: str = _key("/debug/vars", "HTTP path of the JSON page.")
    listen: str = _key(
        "", "host:port of a standalone server; empty mounts path on the app's own server."
    )
    quantiles: tuple[float, ...] = _key(
        (0.5, 0.9, 0.95, 0.99), "Quantiles reported for histograms.", minimum=0.0, maximum=1.0
    )


@dataclass(frozen=True, slots=True)
class PushgatewaySettings:
    """PushgatewaySettings configure pushes, e.g. ``address = "127.0.0.1:9091"``."""

    address: str = _key("127.0.0.1:9091", "host:port (or URL) of the Pushgateway.")
    job: str = _key("", "Grouping key job; empty uses the service name.")
    instance: str = _key("", "Grouping key instance; empty uses the host name.")
    push_on_exit: bool = _key(True, "Push once more when the process exits.")
    timeout: float = _key(5.0, "Seconds a push may take.", duration=True, minimum=0.001)


@dataclass(frozen=True, slots=True)
class OtelMetricsSettings:
    """OtelMetricsSettings configure the OpenTelemetry metrics backend."""

    use_global: bool = _key(
        False, "Use OpenTelemetry's global MeterProvider instead of building one."
    )
    export_interval: float = _key(
        60.0, "Seconds between exports of the built MeterProvider.", duration=True, minimum=0.001
    )
    endpoint: str = _key(
        "",
        "OTLP metrics URL the built MeterProvider exports to (extra kitobs[otlp]); empty: "
        "http://localhost:4318/v1/metrics. OTEL_EXPORTER_OTLP_ENDPOINT gets v1/metrics appended.",
        otel_env="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        otel_fallback="OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    headers: dict[str, str] = _key(
        {},
        "HTTP headers sent with each export, e.g. authorization=Bearer%20x (values URL-encoded "
        "in variables).",
        otel_env="OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        otel_fallback="OTEL_EXPORTER_OTLP_HEADERS",
        headers=True,
    )
    protocol: str = _key(
        "http/protobuf",
        "OTLP transport; grpc is not supported.",
        choices=("http/protobuf",),
        otel_env="OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        otel_fallback="OTEL_EXPORTER_OTLP_PROTOCOL",
    )


_BACKENDS = ("prometheus", "statsd", "expvar", "otel", "pushgateway", "memory", "discard")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """MetricsSettings choose the backends, e.g. ``backend = ["prometheus", "statsd"]``."""

    backend: tuple[str, ...] = _key(
        ("prometheus",),
        "Backend, or a list of backends to fan out to.",
        choices=_BACKENDS,
    )
    max_label_sets: int = _key(
        2000,
        "Distinct label sets per metric before new ones fold into one overflow series.",
        minimum=1,
    )
    process_metrics: bool = _key(True, "Report process and runtime metrics.")
    created_series: bool = _key(False, "Expose Prometheus _created series.")
    allow_public_listen: bool = _key(
        False,
        "Let prometheus.listen and expvar.listen name every interface (0.0.0.0, [::] and their "
        "other spellings), which is refused otherwise.",
    )
    multiprocess: str = _key(
        "auto",
        "Totals across worker processes: auto finds gunicorn and uvicorn workers; off never"
        " shares.",
        choices=("auto", "off"),
    )
    prometheus: PrometheusSettings = _section(PrometheusSettings)
    statsd: StatsdSettings = _section(StatsdSettings)
    expvar: ExpvarSettings = _section(ExpvarSettings)
    pushgateway: PushgatewaySettings = _section(PushgatewaySettings)
    otel: OtelMetricsSettings = _section(OtelMetricsSettings)


@dataclass(frozen=True, slots=True)
class ZipkinSettings:
    """ZipkinSettings point the Zipkin exporter at a collector."""

    endpoint: str = _key(
        "http://127.0.0.1:9411/api/v2/spans", "URL spans are POSTed to (Zipkin v2 JSON)."
    )
    timeout: float = _key(5.0, "Seconds one POST may take.", duration=True, minimum=0.001)


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """OtlpSettings point the OTLP/HTTP exporter at a collector (extra ``kitobs[otlp]``)."""

    endpoint: str = _key("http://127.0.0.1:4318/v1/traces", "OTLP/HTTP traces URL.")
    timeout: float = _key(10.0, "Seconds one export may take.", duration=True, minimum=0.001)


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """TracingSettings configure spans and their export, e.g. ``exporter = "zipkin"``."""

    service_name: str = _key(
        "", "Service name on spans; empty uses [service] name.", otel_env="OTEL_SERVICE_NAME"
    )
    sampler: str = _key(
        "parentbased_always_on",
        "Sampler, by OpenTelemetry's name.",
        choices=(
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ),
        otel_env="OTEL_TRACES_SAMPLER",
    )
    sampler_arg: float = _key(
        1.0,
        "Ratio for the traceidratio samplers.",
        minimum=0.0,
        maximum=1.0,
        otel_env="OTEL_TRACES_SAMPLER_ARG",
    )
    propagators: tuple[str, ...] = _key(
        ("tracecontext", "baggage"),
        "Header formats read and written, by OpenTelemetry's names.",
        choices=("tracecontext", "baggage", "b3", "b3multi", "none"),
        otel_env="OTEL_PROPAGATORS",
    )
    exporter: str = _key(
        "none", "Where finished spans go.", choices=("zipkin", "otlp", "log", "none")
    )
    batch_size: int = _key(512, "Spans sent per export request.", minimum=1)
    queue_size: int = _key(2048, "Finished spans held before dropping.", minimum=1)
    flush_interval: float = _key(1.0, "Seconds between exports.", duration=True, minimum=0.001)
    shutdown_timeout: float = _key(
        5.0, "Longest wait for the last export at shutdown.", duration=True, minimum=0.0
    )
    public_edge: bool = _key(
        False,
        "Do not trust incoming trace headers as parents: start a new trace linking them.",
    )
    zipkin: ZipkinSettings = _section(ZipkinSettings)
    otlp: OtlpSettings = _section(OtlpSettings)


@dataclass(frozen=True, slots=True)
class HttpTransportSettings:
    """HttpTransportSettings configure the HTTP server transports, e.g. ``access_log = false``."""

    exclude_paths: tuple[str, ...] = _key(
        DEFAULT_EXCLUDE_PATHS,
        "Request paths (exact, e.g. /metrics) served without metrics, span or access log line; "
        "list the exposition paths here when you change them.",
    )
    access_log: bool = _key(
        True,
        "Write one info line per request (method, route, status, duration, trace ids) through "
        "the Kit's logger; 5xx and exceptions at error.",
    )


@dataclass(frozen=True, slots=True)
class GrpcTransportSettings:
    """GrpcTransportSettings configure the gRPC server transport, e.g. ``access_log = false``."""

    access_log: bool = _key(
        True,
        "Write one info line per call (method, status, duration, trace ids) through the Kit's "
        "logger; server errors (UNKNOWN, INTERNAL, UNAVAILABLE...) at error.",
    )


@dataclass(frozen=True, slots=True)
class NatsTransportSettings:
    """NatsTransportSettings configure the NATS transport, e.g. ``url = "nats://10.0.0.5:4222"``."""

    url: str = _key(
        "nats://127.0.0.1:4222",
        "Server URL(s) kitobs.transport.nats.connect dials; several separated by commas.",
    )
    connect_timeout: float = _key(
        2.0, "Seconds one connection attempt may take.", duration=True, minimum=0.001
    )
    request_timeout: float = _key(
        10.0,
        "Seconds a Publisher waits for a reply (a request context's deadline shortens it).",
        duration=True,
        minimum=0.001,
    )
    reconnect_time_wait: float = _key(
        2.0, "Seconds between reconnection attempts to one server.", duration=True, minimum=0.0
    )
    max_reconnect_attempts: int = _key(
        60, "Reconnection attempts per server before giving up; -1 for no limit.", minimum=-1
    )
    reconnect_buffer_size: int = _key(
        2 * 1024 * 1024,
        "Bytes of publishes held while reconnecting; past it a publish fails (0: none held).",
        minimum=0,
    )
    access_log: bool = _key(
        True,
        "Write one info line per message a Subscriber processes (subject, status, duration, "
        "trace ids) through the Kit's logger; failures at error.",
    )


@dataclass(frozen=True, slots=True)
class AmqpTransportSettings:
    """AmqpTransportSettings configure the AMQP transport (RabbitMQ), e.g. ``timeout = "5s"``."""

    url: str = _key(
        "amqp://guest:guest@127.0.0.1:5672/",
        "Broker URL the AMQP subscribers and publishers connect to.",
    )
    timeout: float = _key(
        10.0,
        "Seconds a request/reply publisher waits for the reply (the request context's deadline "
        "shortens it).",
        duration=True,
        minimum=0.001,
    )
    max_redeliveries: int = _key(
        3,
        "Times a message whose processing failed is requeued before it is dead-lettered "
        "(rejected without requeue).",
        minimum=0,
    )
    prefetch_count: int = _key(
        32, "Unacknowledged messages a subscriber's channel holds at once.", minimum=1
    )
    reconnect_interval: float = _key(
        1.0,
        "Seconds between reconnection attempts after the broker connection is lost.",
        duration=True,
        minimum=0.01,
    )
    access_log: bool = _key(
        True,
        "Write one info line per message processed (queue, outcome, duration, trace ids) "
        "through the Kit's logger; failures at error.",
    )


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """TransportSettings configure the transports, e.g. ``[transport.http]``."""

    http: HttpTransportSettings = _section(HttpTransportSettings)
    grpc: GrpcTransportSettings = _section(GrpcTransportSettings)
    nats: NatsTransportSettings = _section(NatsTransportSettings)
    amqp: AmqpTransportSettings = _section(AmqpTransportSettings)


@dataclass(frozen=True, slots=True)
class CircuitBreakerSettings:
    """CircuitBreakerSettings are the parameters of breakers built from configuration.

    E.g. ``[circuitbreaker] consecutive_failures = 3``; every breaker
    `kitobs.circuitbreaker.from_config` builds uses them, arguments given in code win.
    """

    consecutive_failures: int = _key(
        5, "Consecutive failures in the closed state that open the breaker.", minimum=1
    )
    open_timeout: float = _key(
        60.0,
        "Seconds the breaker stays open before letting probes through (half-open).",
        duration=True,
        minimum=0.0,
    )
    half_open_requests: int = _key(
        1,
        "Probes let through in the half-open state; that many successes close the breaker.",
        minimum=1,
    )
    probe_timeout: float = _key(
        0.0,
        "Seconds a half-open probe may take: its request deadline is moved to at most that far "
        "ahead, so its client calls give up in time; 0 leaves the deadline as it is.",
        duration=True,
        minimum=0.0,
    )
    interval: float = _key(
        0.0,
        "Seconds of the closed state's counting window, after which the counts start again; "
        "0 keeps counting until the state changes.",
        duration=True,
        minimum=0.0,
    )
    failures: str = _key(
        "both",
        "What counts as a failure: raised exceptions, business errors (a failed response), "
        "or both.",
        choices=("exception", "business", "both"),
    )


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """RateLimitSettings are the parameters of limiters built from configuration.

    E.g. ``[ratelimit] rate = 100``; every limiter `kitobs.ratelimit.from_config` builds uses
    them, arguments given in code win.
    """

    rate: float = _key(10.0, "Tokens added per second.", minimum=0.001)
    burst: int = _key(10, "Bucket size: the most calls let through at once.", minimum=1)
    max_keys: int = _key(
        10000,
        "Buckets a keyed limiter keeps; beyond it the least recently used is evicted (counted).",
        minimum=1,
    )
    max_wait: float = _key(
        0.0,
        "Longest wait of the delaying form (kitobs.ratelimit.delaying), in seconds; 0 waits as "
        "long as the request's deadline allows (and without a deadline, as long as it takes).",
        duration=True,
        minimum=0.0,
    )


@dataclass(frozen=True, slots=True)
class SdSettings:
    """SdSettings configure service discovery built from configuration, e.g. ``[sd]``.

    E.g. ``[sd] retry_max_attempts = 2``; `kitobs.sd.retry_from_config`,
    `kitobs.sd.etcd.from_config`, `kitobs.sd.zk.from_config` and `kitobs.sd.dnssrv.from_config`
    use them, arguments given in code win.
    """

    retry_max_attempts: int = _key(3, "Attempts of a retried call, the first included.", minimum=1)
    retry_timeout: float = _key(
        1.0,
        "Seconds all attempts of a retried call may take together (the request's deadline, "
        "if earlier, wins); 0 uses the request's deadline only.",
        duration=True,
        minimum=0.0,
    )
    etcd_urls: tuple[str, ...] = _key(
        (), "etcd client URLs of one cluster, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379."
    )
    etcd_ca: str = _key("", "CA bundle verifying etcd's TLS certificate; empty: the system's.")
    zookeeper_hosts: tuple[str, ...] = _key(
        (), "ZooKeeper servers, e.g. 10.0.0.1:2181,10.0.0.2:2181."
    )
    zookeeper_session_timeout: float = _key(
        5.0, "Seconds of the ZooKeeper session.", duration=True, minimum=1.0
    )
    dns_nameservers: tuple[str, ...] = _key(
        (), "DNS servers for SRV lookups, e.g. 10.0.0.53; empty: the system's resolv.conf."
    )
    dns_port: int = _key(53, "Port of those DNS servers.", minimum=1, maximum=65535)
    dns_refresh: float = _key(
        30.0, "Seconds between two SRV lookups.", duration=True, minimum=0.001
    )


@dataclass(frozen=True, slots=True)
class BasicAuthSettings:
    """BasicAuthSettings configure `kitobs.auth.basic`, e.g. ``[auth.basic] realm = "api"``."""

    realm: str = _key(
        "kitobs", "Realm named in the WWW-Authenticate: Basic header of a refused request."
    )


@dataclass(frozen=True, slots=True)
class JwtAuthSettings:
    """JwtAuthSettings configure `kitobs.auth.jwt`, e.g. ``algorithms = ["RS256"]``."""

    algorithms: tuple[str, ...] = _key(
        (),
        "Algorithms a token may be signed with, e.g. RS256,ES256; required. none is never "
        "accepted, and HS* cannot be listed with asymmetric ones (key confusion).",
    )
    audience: tuple[str, ...] = _key(
        (),
        "Accepted aud values; a token must name one. Empty refuses any token with an aud.",
    )
    issuer: str = _key("", "Required iss of every token; empty skips the issuer check.")
    leeway: float = _key(
        0.0, "Seconds of clock skew allowed on exp, nbf and iat.", duration=True, minimum=0.0
    )
    required_claims: tuple[str, ...] = _key(
        ("exp",), "Claims every token must carry, e.g. exp,iat,sub."
    )
    realm: str = _key("", "Realm of the WWW-Authenticate: Bearer header; empty leaves it out.")
    jwks_url: str = _key(
        "", "URL of the identity provider's JSON Web Key Set; the keys when none are given."
    )
    jwks_refresh_interval: float = _key(
        300.0,
        "Seconds between background fetches of the key set.",
        duration=True,
        minimum=1.0,
    )
    jwks_refetch_interval: float = _key(
        30.0,
        "Fewest seconds between two fetches that tokens with an unknown kid trigger.",
        duration=True,
        minimum=0.0,
    )
    jwks_timeout: float = _key(
        5.0, "Seconds one key set fetch may take.", duration=True, minimum=0.001
    )


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """AuthSettings configure the auth middleware, e.g. ``[auth.jwt]``."""

    basic: BasicAuthSettings = _section(BasicAuthSettings)
    jwt: JwtAuthSettings = _section(JwtAuthSettings)


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings is the whole configuration, e.g. ``load().log.level``."""

    service: ServiceSettings = _section(ServiceSettings)
    kit: KitSettings = _section(KitSettings)
    log: LogSettings = _section(LogSettings)
    metrics: MetricsSettings = _section(MetricsSettings)
    tracing: TracingSettings = _section(TracingSettings)
    transport: TransportSettings = _section(TransportSettings)
    circuitbreaker: CircuitBreakerSettings = _section(CircuitBreakerSettings)
    ratelimit: RateLimitSettings = _section(RateLimitSettings)
    auth: AuthSettings = _section(AuthSettings)
    sd: SdSettings = _section(SdSettings)


# --------------------------------------------------------------------------------------------
# Introspection of the schema.


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """KeyInfo describes one configuration key, e.g. ``log.level`` with its variable and default."""

    path: tuple[str, ...]
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None
    duration: bool
    minimum: float | None
    maximum: float | None
    otel_env: str | None
    otel_fallback: str | None = None

    @property
    def dotted(self) -> str:
        """The dotted key, e.g. ``metrics.statsd.address``."""
        return ".".join(self.path)

    @property
    def variable(self) -> str:
        """The environment variable, e.g. ``KITOBS_METRICS_STATSD_ADDRESS``."""
        return env_name(self.path)


def env_name(path: tuple[str, ...]) -> str:
    """env_name gives a key's environment variable, e.g. ``KITOBS_LOG_LEVEL`` for log.level."""
    return "KITOBS_" + "_".join(p.upper() for p in path)


def _kind(tp: Any) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "str"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args[1:] == (Ellipsis,):
        return "list[float]" if args[0] is float else "list[str]"
    if origin is dict:
        return "labels"
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _walk(cls: type[Any], prefix: tuple[str, ...]) -> Iterator[KeyInfo]:
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            yield from _walk(tp, (*prefix, f.name))
            continue
        m = f.metadata
        yield KeyInfo(
            path=(*prefix, f.name),
            kind="headers" if m.get("headers") else _kind(tp),
            default=getattr(instance, f.name),
            doc=m["doc"],
            choices=m["choices"],
            duration=m["duration"],
            minimum=m["minimum"],
            maximum=m["maximum"],
            otel_env=m["otel_env"],
            otel_fallback=m.get("otel_fallback"),
        )


def _sections(cls: type[Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield prefix, cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            yield from _sections(hints[f.name], (*prefix, f.name))


def key_name(section: type[Any], name: str) -> str:
    """key_name gives the dotted key of field *name* of a section, e.g. ``metrics.statsd.address``
    for ``key_name(StatsdSettings, "address")``: error messages name keys through the schema.

    Raises:
        KeyError: *section* is not a section of `Settings` or has no key *name*.
    """
    path = _section_paths().get(section)
    if path is None or name not in {f.name for f in dataclasses.fields(section)}:
        raise KeyError(f"{section.__name__} has no configuration key {name!r}")
    return f"{path}.{name}"


@functools.cache
def _section_paths() -> dict[type[Any], str]:
    return {cls: ".".join(path) for path, cls in _sections(Settings, ()) if path}


def all_keys() -> list[KeyInfo]:
    """keys lists every configuration key in schema order, e.g. for generating the reference."""
    return list(_walk(Settings, ()))


# --------------------------------------------------------------------------------------------
# Parsing values.

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _fail(
    info: KeyInfo, message: str, value: object, variable: str | None, allowed: Any
) -> NoReturn:
    raise ConfigError(message, key=info.dotted, value=value, variable=variable, allowed=allowed)


def _number(info: KeyInfo, raw: Any, variable: str | None, integer: bool) -> float:
    what = "an integer" if integer else ("seconds as a number" if info.duration else "a number")
    if isinstance(raw, bool):
        _fail(info, f"must be {what}", raw, variable, what)
    if isinstance(raw, str):
        try:
            num: float = int(raw.strip()) if integer else float(raw.strip())
        except ValueError:
            _fail(info, f"must be {what}", raw, variable, what)
    elif isinstance(raw, int | float):
        num = raw
        if integer and not isinstance(raw, int):
            _fail(info, f"must be {what}", raw, variable, what)
    else:
        _fail(info, f"must be {what}", raw, variable, what)
    if isinstance(num, float) and not math.isfinite(num):
        _fail(info, f"must be {what}", raw, variable, "a finite number")
    _range(info, num, raw, variable)
    return num


def _range(info: KeyInfo, num: float, raw: Any, variable: str | None) -> None:
    lo, hi = info.minimum, info.maximum
    if (lo is not None and num < lo) or (hi is not None and num > hi):
        if lo is not None and hi is not None:
            bounds = f"a value from {lo:g} to {hi:g}"
        elif lo is not None:
            bounds = f"a value of at least {lo:g}"
        else:
            bounds = f"a value of at most {hi:g}"
        _fail(info, "is out of range", raw, variable, bounds)


def _choice(info: KeyInfo, value: str, raw: Any, variable: str | None) -> str:
    if info.choices is None:
        return value
    # Choices are lowercase names; "WARN" or "DogStatsD" mean the same thing.
    if value.lower() in info.choices:
        return value.lower()
    _fail(info, "is not a known value", raw, variable, info.choices)


def _parse(info: KeyInfo, raw: Any, variable: str | None) -> Any:
    """Turn a raw value from TOML (typed) or the environment (a string) into the key's type."""
    kind = info.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        _fail(info, "must be a boolean", raw, variable, "true or false")
    if kind == "int":
        return int(_number(info, raw, variable, integer=True))
    if kind == "float":
        return float(_number(info, raw, variable, integer=False))
    if kind == "str":
        if not isinstance(raw, str):
            _fail(info, "must be a string", raw, variable, "a string")
        return _choice(info, raw.strip() if info.choices else raw, raw, variable)
    if kind in ("list[str]", "list[float]"):
        if isinstance(raw, str):
            items: list[Any] = [p.strip() for p in raw.split(",") if p.strip()]
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            _fail(info, "must be a list", raw, variable, "a list (comma-separated in variables)")
        if kind == "list[float]":
            return tuple(float(_number(info, item, variable, integer=False)) for item in items)
        out = []
        for item in items:
            if not isinstance(item, str):
                _fail(info, "must be a list of strings", raw, variable, "strings")
            out.append(_choice(info, item.strip() if info.choices else item, raw, variable))
        return tuple(out)
    if kind == "labels":
        return _labels(info, raw, variable)
    if kind == "headers":
        return _headers(info, raw, variable)
    raise AssertionError(kind)  # pragma: no cover - schema bug


def _labels(info: KeyInfo, raw: Any, variable: str | None) -> dict[str, str]:
    form = "a table of string values (k=v,k2=v2 in variables)"
    pairs: dict[str, Any]
    if isinstance(raw, str):
        pairs = {}
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                _fail(info, "must be a list of name=value pairs", raw, variable, form)
            pairs[name.strip()] = value.strip()
    elif isinstance(raw, dict):
        pairs = raw
    else:
        _fail(info, "must be a table", raw, variable, form)
    out: dict[str, str] = {}
    for name, value in pairs.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            _fail(info, f"label {name!r} must have a string value", raw, variable, form)
        if not _is_label_name(name):
            _fail(
                info,
                f"label name {name!r} is not snake_case",
                raw,
                variable,
                "names matching [a-z_][a-z0-9_]*",
            )
        out[name] = str(value)
    return out


def _headers(info: KeyInfo, raw: Any, variable: str | None) -> dict[str, str]:
    """HTTP headers: a TOML table, or OpenTelemetry's ``k=v,k2=v2`` with URL-encoded values."""
    form = "a table of header values (k=v,k2=v2 in variables, values URL-encoded)"
    out: dict[str, str] = {}
    if isinstance(raw, str):
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                _fail(info, "must be a list of name=value pairs", "(hidden)", variable, form)
            out[name.strip()] = urllib.parse.unquote(value.strip())
    elif isinstance(raw, dict):
        for name, value in raw.items():
            if not isinstance(value, str):
                _fail(info, f"header {name!r} must have a string value", "(hidden)", variable, form)
            out[str(name)] = value
    else:
        _fail(info, "must be a table", "(hidden)", variable, form)
    for name in out:
        if not name or any(c in name for c in ' \t:"(),/;<=>?@[]{}') or not name.isascii():
            _fail(info, f"{name!r} is not a header name", "(hidden)", variable, "HTTP header names")
    return out


def _is_label_name(name: str) -> bool:
    return (
        bool(name)
        and name.isascii()
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isalnum() or c == "_" for c in name)
        and name == name.lower()
        and not name.startswith("__")
    )


# --------------------------------------------------------------------------------------------
# Loading.


def _find_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], search: bool
) -> tuple[Path | None, bool]:
    """Return the config file to read and whether it is a pyproject.toml."""
    if path is not None:
        return Path(path), False
    if env.get("KITOBS_CONFIG"):
        return Path(env["KITOBS_CONFIG"]), False
    if not search:
        return None, False
    if Path("kitobs.toml").is_file():
        return Path("kitobs.toml"), False
    if Path("pyproject.toml").is_file():
        return Path("pyproject.toml"), True
    return None, False


def _read_file(path: Path, pyproject: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist",
            allowed="an existing TOML file (--config, $KITOBS_CONFIG)",
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err}") from None
    if pyproject:
        tool = data.get("tool", {})
        section = tool.get("kitobs", {}) if isinstance(tool, dict) else {}
        return section if isinstance(section, dict) else {}
    return data


def _flatten(
    data: Mapping[str, Any],
    prefix: tuple[str, ...],
    by_path: Mapping[tuple[str, ...], KeyInfo],
    section_paths: set[tuple[str, ...]],
    source: str,
) -> Iterator[tuple[KeyInfo, Any]]:
    for name, value in data.items():
        path = (*prefix, name)
        if path in section_paths:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{'.'.join(path)} is a section, not a value (in {source})",
                    key=".".join(path),
                    value=value,
                    allowed="a table",
                )
            yield from _flatten(value, path, by_path, section_paths, source)
            continue
        info = by_path.get(path)
        if info is None:
            siblings = sorted(
                p[-1]
                for p in (*by_path, *section_paths)
                if len(p) == len(path) and p[:-1] == prefix
            )
            raise ConfigError(
                f"unknown key (in {source})",
                key=".".join(path),
                allowed=siblings,
            )
        yield info, value


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    search: bool = True,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """load builds `Settings` from defaults, a file, the environment and overrides.

    Args:
        path: a TOML file to read (``--config``); when None, ``$KITOBS_CONFIG``, then
            ``./kitobs.toml``, then ``[tool.kitobs]`` in ``./pyproject.toml`` (if ``search``).
        env: the environment to read (``os.environ`` when None).
        overrides: explicit values by dotted key, e.g. ``{"log.level": "debug"}``; they win.
        search: look for ``./kitobs.toml`` and ``./pyproject.toml`` when no file is named.
        defaults: values by dotted key that replace the built-in defaults, e.g. a program's
            embedded defaults; every other source still overrides them.

    Raises:
        ConfigError: an unknown key or variable, or a bad value; the message names the key, the
            variable if the value came from one, the value and what is allowed.
    """
    environ = os.environ if env is None else env
    infos = all_keys()
    by_path = {info.path: info for info in infos}
    by_dotted = {info.dotted: info for info in infos}
    section_paths = {p for p, _ in _sections(Settings, ()) if p}
    values: dict[tuple[str, ...], Any] = {}

    def apply_dotted(source: Mapping[str, Any], label: str) -> None:
        for dotted, raw in source.items():
            info = by_dotted.get(dotted)
            if info is None:
                raise ConfigError(
                    f"unknown key (in {label})", key=dotted, allowed=sorted(by_dotted)
                )
            values[info.path] = _parse(info, raw, None)

    if defaults:
        apply_dotted(defaults, "defaults")

    file, pyproject = _find_file(path, environ, search)
    if file is not None:
        data = _read_file(file, pyproject)
        source = f"[tool.kitobs] of {file}" if pyproject else str(file)
        for info, raw in _flatten(data, (), by_path, section_paths, source):
            values[info.path] = _parse(info, raw, None)

    by_variable = {info.variable: info for info in infos}
    for variable in sorted(environ):
        if not variable.startswith("KITOBS_") or variable == "KITOBS_CONFIG":
            continue
        known = by_variable.get(variable)
        if known is None:
            raise ConfigError(
                "unknown environment variable",
                key=variable,
                allowed="one of the KITOBS_* variables in the configuration reference",
            )
        values[known.path] = _parse(known, environ[variable], variable)
    for info in infos:
        if not info.otel_env or info.variable in environ:
            continue
        for standard in (info.otel_env, info.otel_fallback):
            if not standard or not environ.get(standard):
                continue
            raw = environ[standard]
            if info.path == ("tracing", "sampler"):
                raw = raw.strip().lower()
            if standard == "OTEL_EXPORTER_OTLP_ENDPOINT":
                # OpenTelemetry's base URL for every signal: the signal's path is appended.
                raw = raw.strip()
                raw += "v1/metrics" if raw.endswith("/") else "/v1/metrics"
            values[info.path] = _parse(info, raw, standard)
            break

    if overrides:
        apply_dotted(overrides, "explicit arguments")

    return _build(Settings, (), values)


def _build(cls: type[_T], prefix: tuple[str, ...], values: Mapping[tuple[str, ...], Any]) -> _T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        path = (*prefix, f.name)
        if _is_section(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], path, values)
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def reference() -> str:
    """reference renders every key as Markdown, e.g. for ``docs/configuration.md``.

    One table per section: key, default, environment variable, and help (with the allowed values).
    """
    lines = [
        "# Configuration reference",
        "",
        "Generated from `kitobs.config` by `kitobs config reference`; do not edit by hand.",
        "",
        "Each key can be set in a TOML file (`--config FILE`, `$KITOBS_CONFIG`, `./kitobs.toml`,",
        "or `[tool.kitobs]` in `./pyproject.toml`), in its environment variable, or in code",
        "(`kitobs.config.load(overrides={...})`), each overriding the one before. Lists are",
        "comma-separated in variables, labels are `k=v,k2=v2`, durations are seconds.",
    ]
    section: tuple[str, ...] | None = None
    for info in all_keys():
        if info.path[:-1] != section:
            section = info.path[:-1]
            lines += [
                "",
                f"## [{'.'.join(section)}]",
                "",
                "| key | default | variable | meaning |",
                "|---|---|---|---|",
            ]
        doc = info.doc
        if info.choices:
            doc += " One of: " + ", ".join(f"`{c}`" for c in info.choices) + "."
        if info.otel_env and info.otel_fallback:
            doc += f" Falls back to `${info.otel_env}`, then `${info.otel_fallback}`."
        elif info.otel_env:
            doc += f" Falls back to `${info.otel_env}`."
        default = _show(info.default).replace("|", "\\|")
        lines.append(
            f"| `{info.path[-1]}` | `{default}` | `{info.variable}` | {doc.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"
