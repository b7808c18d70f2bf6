"""The metric contract: every metric kitobs itself emits, with its names on each backend.

These names are a public interface: dashboards, alerts and recording rules are built on them, and
kitobs' own dashboards are generated from this module. The middleware, the backends and the
dashboard generator all read it; changing an entry is a breaking change.

The rules every metric name follows (snake_case base name, unit suffixes, ``_total``, statsd's
dots) live in `kitobs.metrics.naming`, and the declaration type `MetricSpec` in `kitobs.metrics`;
both are re-exported here, where they were first defined. This module adds what is particular to
kitobs' own metrics: the OpenTelemetry semantic-convention names (`otel_name`) and attribute names
(`otel_attribute`) of its labels.

Example::

    >>> HTTP_SERVER_REQUEST_DURATION.prometheus_name
    'http_server_request_duration_seconds'
    >>> prometheus_name("jobs", "", "counter")
    'jobs_total'
    >>> statsd_name("http_server_request_duration", "shop")
    'shop.http.server.request.duration'
    >>> otel_name("http_server_request_duration")
    'http.server.request.duration'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitobs.config import DURATION_BUCKETS
from kitobs.metrics import MetricSpec
from kitobs.metrics.naming import (
    UNITS,
    MetricKind,
    check_base_name,
    check_label_name,
    prometheus_name,
    statsd_name,
)
from kitobs.metrics.selfmetrics import (
    LABEL_SETS_FOLDED,
    PROCESS_FAMILIES,
    RECORD_DROP_REASONS,
    TELEMETRY_DROPPED,
)

if TYPE_CHECKING:
    from kitobs.metrics import Counter, Gauge, Histogram

__all__ = [
    "MetricKind",
    "MetricSpec",
    "UNITS",
    "ATTRIBUTE_NAMES",
    "HTTP_SERVER_REQUEST_DURATION",
    "HTTP_SERVER_ACTIVE_REQUESTS",
    "HTTP_CLIENT_REQUEST_DURATION",
    "RPC_SERVER_CALL_DURATION",
    "RPC_CLIENT_CALL_DURATION",
    "ENDPOINT_DURATION",
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "BREAKER_REJECTED",
    "BREAKER_STATES",
    "BREAKER_REJECT_REASONS",
    "RATELIMIT_DECISIONS",
    "RATELIMIT_WAIT_DURATION",
    "RATELIMIT_KEYS_EVICTED",
    "RATELIMIT_DECISION_VALUES",
    "AUTH_FAILURES",
    "AUTH_JWKS_REFRESHES",
    "MESSAGING_CLIENT_OPERATION_DURATION",
    "MESSAGING_PROCESS_DURATION",
    "MESSAGING_CLIENT_SENT_MESSAGES",
    "MESSAGING_CLIENT_CONSUMED_MESSAGES",
    "MESSAGING_SETTLEMENTS",
    "MESSAGING_RECONNECTS",
    "MESSAGING_RETURNED",
    "MESSAGING_DEAD_LETTERED",
    "MESSAGING_SETTLEMENT_VALUES",
    "AUTH_SCHEMES",
    "AUTH_FAILURE_REASONS",
    "TELEMETRY_DROPPED",
    "LABEL_SETS_FOLDED",
    "ALL",
    "RECORD_DROP_REASONS",
    "PROCESS_FAMILIES",
    "OUTCOMES",
    "UNMATCHED_ROUTE",
    "OTHER_METHOD",
    "KNOWN_METHODS",
    "prometheus_name",
    "statsd_name",
    "otel_name",
    "otel_attribute",
    "check_base_name",
    "check_label_name",
    "reference",
]

#: Label name → OpenTelemetry attribute name, for the contract's labels.
ATTRIBUTE_NAMES: dict[str, str] = {
    "http_request_method": "http.request.method",
    "http_route": "http.route",
    "http_response_status_code": "http.response.status_code",
    "url_scheme": "url.scheme",
    "error_type": "error.type",
    "server_address": "server.address",
    "server_port": "server.port",
    "rpc_system_name": "rpc.system.name",
    "rpc_method": "rpc.method",
    "rpc_status_code": "rpc.response.status_code",
    "endpoint": "kitobs.endpoint",
    "outcome": "kitobs.outcome",
    "signal": "kitobs.signal",
    "reason": "kitobs.reason",
    "metric": "kitobs.metric",
    "breaker": "kitobs.breaker",
    "from": "kitobs.breaker.from",
    "to": "kitobs.breaker.to",
    "limiter": "kitobs.limiter",
    "decision": "kitobs.limiter.decision",
    "scheme": "kitobs.auth.scheme",
    "result": "kitobs.result",
    "messaging_system": "messaging.system",
    "messaging_operation_name": "messaging.operation.name",
    "messaging_destination_name": "messaging.destination.name",
    "settlement": "kitobs.messaging.settlement",
}

#: Outcomes of an endpoint call, the values of the ``outcome`` label.
#: ``rejected`` (an open circuit breaker), ``limited`` (a rate limiter) and ``unauthenticated``
#: (auth middleware) are calls the toolkit middleware refused; dashboards count them as errors and
#: also show them on their own.
OUTCOMES: tuple[str, ...] = (
    "success",
    "business_error",
    "exception",
    "rejected",
    "limited",
    "unauthenticated",
)
#: Values of ``kitobs_breaker_state``, gobreaker's numbering: closed 0, half-open 1, open 2.
BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
#: ``reason`` of ``kitobs_breaker_rejected_total``.
BREAKER_REJECT_REASONS: tuple[str, ...] = ("open", "half_open_full")
#: ``decision`` of ``kitobs_ratelimit_decisions_total``.
RATELIMIT_DECISION_VALUES: tuple[str, ...] = ("allowed", "limited")
#: ``scheme`` of ``kitobs_auth_failures_total``.
AUTH_SCHEMES: tuple[str, ...] = ("basic", "bearer")
#: ``reason`` of ``kitobs_auth_failures_total``.
AUTH_FAILURE_REASONS: tuple[str, ...] = (
    "missing",
    "malformed",
    "expired",
    "not_active",
    "invalid",
    "unexpected_alg",
)
#: ``http_route`` of a request that matched no route.
UNMATCHED_ROUTE = "unmatched"
#: ``http_request_method`` of a method outside `KNOWN_METHODS`.
OTHER_METHOD = "_OTHER"
KNOWN_METHODS: frozenset[str] = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


def otel_name(base: str) -> str:
    """otel_name gives the OpenTelemetry instrument name, e.g. ``http.server.request.duration``."""
    for spec in ALL:
        if spec.name == base:
            return spec.otel
    return base.replace("_", ".")


def otel_attribute(label: str) -> str:
    """otel_attribute gives a label's OpenTelemetry attribute name, e.g. ``http.route``."""
    return ATTRIBUTE_NAMES.get(label, label)


HTTP_SERVER_REQUEST_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="http_server_request_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of HTTP server requests.",
    labels=(
        "http_request_method",
        "http_route",
        "http_response_status_code",
        "url_scheme",
        "error_type",
    ),
    otel="http.server.request.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
HTTP_SERVER_ACTIVE_REQUESTS: MetricSpec[Gauge] = MetricSpec(
    name="http_server_active_requests",
    kind="gauge",
    unit="",
    help="Number of HTTP server requests in flight.",
    labels=("http_request_method", "url_scheme"),
    otel="http.server.active_requests",
)
HTTP_CLIENT_REQUEST_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="http_client_request_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of HTTP client requests.",
    labels=(
        "http_request_method",
        "server_address",
        "server_port",
        "http_response_status_code",
        "error_type",
    ),
    otel="http.client.request.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type", "http_response_status_code"),
)
_RPC_LABELS = ("rpc_system_name", "rpc_method", "rpc_status_code", "error_type")
RPC_SERVER_CALL_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="rpc_server_call_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of RPC calls served.",
    labels=_RPC_LABELS,
    otel="rpc.server.call.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
RPC_CLIENT_CALL_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="rpc_client_call_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of RPC calls made.",
    labels=_RPC_LABELS,
    otel="rpc.client.call.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
ENDPOINT_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="kitobs_endpoint_duration",
    kind="histogram",
    unit="seconds",
    help=(
        "Duration of endpoint calls, by outcome (success, business_error, exception; "
        "rejected, limited, unauthenticated when toolkit middleware refused the call)."
    ),
    labels=("endpoint", "outcome"),
    otel="kitobs.endpoint.duration",
    buckets=DURATION_BUCKETS,
)
BREAKER_STATE: MetricSpec[Gauge] = MetricSpec(
    name="kitobs_breaker_state",
    kind="gauge",
    unit="",
    help="State of a circuit breaker: 0 closed, 1 half-open, 2 open.",
    labels=("breaker",),
    otel="kitobs.breaker.state",
)
BREAKER_TRANSITIONS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_breaker_transitions",
    kind="counter",
    unit="",
    help="Circuit breaker state changes, by the state left and the state entered.",
    labels=("breaker", "from", "to"),
    otel="kitobs.breaker.transitions",
)
BREAKER_REJECTED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_breaker_rejected",
    kind="counter",
    unit="",
    help="Calls a circuit breaker refused, by reason (open, half_open_full).",
    labels=("breaker", "reason"),
    otel="kitobs.breaker.rejected",
)
RATELIMIT_DECISIONS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_ratelimit_decisions",
    kind="counter",
    unit="",
    help="Rate limiter decisions, by decision (allowed, limited).",
    labels=("limiter", "decision"),
    otel="kitobs.ratelimit.decisions",
)
RATELIMIT_WAIT_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="kitobs_ratelimit_wait_duration",
    kind="histogram",
    unit="seconds",
    help="Time a delaying rate limiter held calls before letting them through.",
    labels=("limiter",),
    otel="kitobs.ratelimit.wait.duration",
    buckets=DURATION_BUCKETS,
)
RATELIMIT_KEYS_EVICTED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_ratelimit_keys_evicted",
    kind="counter",
    unit="",
    help="Buckets a keyed rate limiter evicted (least recently used) to stay within its key bound.",
    labels=("limiter",),
    otel="kitobs.ratelimit.keys.evicted",
)
AUTH_FAILURES: MetricSpec[Counter] = MetricSpec(
    name="kitobs_auth_failures",
    kind="counter",
    unit="",
    help=(
        "Requests auth middleware refused, by scheme (basic, bearer) and reason (missing, "
        "malformed, expired, not_active, invalid, unexpected_alg)."
    ),
    labels=("scheme", "reason"),
    otel="kitobs.auth.failures",
)
AUTH_JWKS_REFRESHES: MetricSpec[Counter] = MetricSpec(
    name="kitobs_auth_jwks_refreshes",
    kind="counter",
    unit="",
    help="JWKS key set fetches, by result (success, failure).",
    labels=("result",),
    otel="kitobs.auth.jwks.refreshes",
)

_MESSAGING_LABELS = (
    "messaging_system",
    "messaging_operation_name",
    "messaging_destination_name",
    "error_type",
)
MESSAGING_CLIENT_OPERATION_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="messaging_client_operation_duration",
    kind="histogram",
    unit="seconds",
    help=(
        "Duration of messaging client operations (send, request/reply), by system, operation "
        "and destination (a queue, exchange or subject pattern)."
    ),
    labels=_MESSAGING_LABELS,
    otel="messaging.client.operation.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
MESSAGING_PROCESS_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="messaging_process_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of processing a received message, by system, operation and destination.",
    labels=_MESSAGING_LABELS,
    otel="messaging.process.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
MESSAGING_CLIENT_SENT_MESSAGES: MetricSpec[Counter] = MetricSpec(
    name="messaging_client_sent_messages",
    kind="counter",
    unit="",
    help="Messages a messaging client sent, or tried to send (error_type set when it failed).",
    labels=_MESSAGING_LABELS,
    otel="messaging.client.sent.messages",
    optional_labels=("error_type",),
)
MESSAGING_CLIENT_CONSUMED_MESSAGES: MetricSpec[Counter] = MetricSpec(
    name="messaging_client_consumed_messages",
    kind="counter",
    unit="",
    help="Messages a messaging client received (error_type set when processing failed).",
    labels=_MESSAGING_LABELS,
    otel="messaging.client.consumed.messages",
    optional_labels=("error_type",),
)
#: Values of the ``settlement`` label: what a consumer did with a message.
MESSAGING_SETTLEMENT_VALUES: tuple[str, ...] = ("ack", "nack", "requeue", "reject")
MESSAGING_SETTLEMENTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_settlements",
    kind="counter",
    unit="",
    help="Messages a consumer settled, by settlement (ack, nack, requeue, reject).",
    labels=("messaging_system", "messaging_destination_name", "settlement"),
    otel="kitobs.messaging.settlements",
)
MESSAGING_RECONNECTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_reconnects",
    kind="counter",
    unit="",
    help="Connections to a message broker re-established after being lost.",
    labels=("messaging_system",),
    otel="kitobs.messaging.reconnects",
)
MESSAGING_RETURNED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_returned",
    kind="counter",
    unit="",
    help="Messages the broker returned as unroutable (published mandatory, no queue bound).",
    labels=("messaging_system", "messaging_destination_name"),
    otel="kitobs.messaging.returned",
)
MESSAGING_DEAD_LETTERED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_dead_lettered",
    kind="counter",
    unit="",
    help=(
        "Messages a consumer gave up on after their redelivery limit, rejected without requeue "
        "(to the queue's dead-letter exchange when it has one)."
    ),
    labels=("messaging_system", "messaging_destination_name"),
    otel="kitobs.messaging.dead_lettered",
)

#: Every metric of the contract, in table order.
ALL: tuple[MetricSpec[Counter] | MetricSpec[Gauge] | MetricSpec[Histogram], ...] = (
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_CLIENT_REQUEST_DURATION,
    RPC_SERVER_CALL_DURATION,
    RPC_CLIENT_CALL_DURATION,
    ENDPOINT_DURATION,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    BREAKER_REJECTED,
    RATELIMIT_DECISIONS,
    RATELIMIT_WAIT_DURATION,
    RATELIMIT_KEYS_EVICTED,
    AUTH_FAILURES,
    AUTH_JWKS_REFRESHES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_PROCESS_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_SETTLEMENTS,
    MESSAGING_RECONNECTS,
    MESSAGING_RETURNED,
    MESSAGING_DEAD_LETTERED,
    TELEMETRY_DROPPED,
    LABEL_SETS_FOLDED,
)


def reference() -> str:
    """reference renders the contract as Markdown, e.g. for ``docs/metric-names.md``.

    One row per metric: its Prometheus, statsd and OpenTelemetry names, type and labels.
    """
    lines = [
        "# Metric names",
        "",
        "Generated from `kitobs.contract` by `kitobs contract reference`; do not edit by hand.",
        "These names are a public interface: dashboards, alerts and recording rules build on them.",
        "Labels in *italics* are present only on some series (e.g. `error_type` only on errors).",
        "",
        "| Prometheus | statsd | OpenTelemetry | type | labels | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in ALL:
        labels = ", ".join(
            f"*`{label}`*" if label in spec.optional_labels else f"`{label}`"
            for label in spec.labels
        )
        lines.append(
            f"| `{spec.prometheus_name}` | `{statsd_name(spec.name)}` | `{spec.otel}` "
            f"| {spec.kind} | {labels} | {spec.help} |"
        )
    lines += [
        "",
        "Durations are histograms in seconds with the buckets "
        + ", ".join(f"{b:g}" for b in ALL[0].buckets or ())
        + " (statsd: timers in milliseconds). `http_route` is the route template, "
        f"`{UNMATCHED_ROUTE}` when no route matched; unknown HTTP methods are `{OTHER_METHOD}`; "
        "status codes are strings. Process and runtime metrics use prometheus_client's names "
        "(`process_*`, `python_gc_*`, `python_info`); a declared metric may not take one of "
        "those names.",
        "",
        '`kitobs_telemetry_dropped_total{signal="metrics"}` counts recordings every backend '
        "drops, by `reason`: "
        + "; ".join(f"`{reason}`: {meaning}" for reason, meaning in RECORD_DROP_REASONS.items())
        + ". Other reasons belong to one backend or signal (e.g. `queue_full`, `push_failed`).",
    ]
    return "\n".join(lines) + "\n"
