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
    "SD_INSTANCES",
    "SD_EVENTS",
    "SD_EVENT_OUTCOMES",
    "SD_LAST_UPDATE",
    "SD_FACTORY_ERRORS",
    "LB_ATTEMPTS",
    "LB_ATTEMPT_OUTCOMES",
    "LB_ATTEMPTS_PER_CALL",
    "LB_NO_ENDPOINTS",
    "RATELIMIT_WAIT_DURATION",
    "RATELIMIT_KEYS_EVICTED",
    "RATELIMIT_DECISION_VALUES",
    "AUTH_FAILURES",
    "AUTH_JWKS_REFRESHES",
    "AUTH_SCHEMES",
    "AUTH_FAILURE_REASONS",
    "MESSAGING_CLIENT_OPERATION_DURATION",
    "MESSAGING_PROCESS_DURATION",
    "MESSAGING_CLIENT_SENT_MESSAGES",
    "MESSAGING_CLIENT_CONSUMED_MESSAGES",
    "MESSAGING_SETTLEMENTS",
    "MESSAGING_RECONNECTS",
    "MESSAGING_RETURNED",
    "MESSAGING_DEAD_LETTERED",
    "MESSAGING_SETTLEMENT_VALUES",
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
#: ``outcome`` of ``kitobs_sd_events_total``.
SD_EVENT_OUTCOMES: tuple[str, ...] = ("update", "error")
#: ``outcome`` of ``kitobs_lb_attempts_total``.
LB_ATTEMPT_OUTCOMES: tuple[str, ...] = ("success", "error", "timeout", "no_endpoints")
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
#: ``settlement`` of ``kitobs_messaging_settlements_total``: how a consumer settled a message.
MESSAGING_SETTLEMENT_VALUES: tuple[str, ...] = ("ack", "nack", "requeue", "reject")
#: ``http_route`` of a request that matched no route.
UNMATCHED_ROUTE = "unmatched"
#: ``http_request_method`` of a method outside `KNOWN_METHODS`.
OTHER_METHOD = "_OTHER"
#: The HTTP methods kept as they are in ``http_request_method``; any other is `OTHER_METHOD`.
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


#: ``http_server_request_duration_seconds``: HTTP requests served, by route and status.
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
#: ``http_server_active_requests``: HTTP requests in flight.
HTTP_SERVER_ACTIVE_REQUESTS: MetricSpec[Gauge] = MetricSpec(
    name="http_server_active_requests",
    kind="gauge",
    unit="",
    help="Number of HTTP server requests in flight.",
    labels=("http_request_method", "url_scheme"),
    otel="http.server.active_requests",
)
#: ``http_client_request_duration_seconds``: HTTP requests made, by server and status.
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
#: ``rpc_server_call_duration_seconds``: RPCs served, by method and status code.
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
#: ``rpc_client_call_duration_seconds``: RPCs made, by method and status code.
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
#: ``kitobs_endpoint_duration_seconds``: endpoint calls, by endpoint and outcome.
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
#: ``kitobs_breaker_state``: each circuit breaker's state (0 closed, 1 half-open, 2 open).
BREAKER_STATE: MetricSpec[Gauge] = MetricSpec(
    name="kitobs_breaker_state",
    kind="gauge",
    unit="",
    help="State of a circuit breaker: 0 closed, 1 half-open, 2 open.",
    labels=("breaker",),
    otel="kitobs.breaker.state",
)
#: ``kitobs_breaker_transitions_total``: breaker state changes, by from and to.
BREAKER_TRANSITIONS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_breaker_transitions",
    kind="counter",
    unit="",
    help="Circuit breaker state changes, by the state left and the state entered.",
    labels=("breaker", "from", "to"),
    otel="kitobs.breaker.transitions",
)
#: ``kitobs_breaker_rejected_total``: calls a breaker refused, by reason.
BREAKER_REJECTED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_breaker_rejected",
    kind="counter",
    unit="",
    help="Calls a circuit breaker refused, by reason (open, half_open_full).",
    labels=("breaker", "reason"),
    otel="kitobs.breaker.rejected",
)
#: ``kitobs_sd_instances``: instances discovery last reported, by service.
SD_INSTANCES: MetricSpec[Gauge] = MetricSpec(
    name="kitobs_sd_instances",
    kind="gauge",
    unit="",
    help="Instances service discovery last reported for a service.",
    labels=("service",),
    otel="kitobs.sd.instances",
)
#: ``kitobs_sd_events_total``: discovery events, by service and outcome.
SD_EVENTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_sd_events",
    kind="counter",
    unit="",
    help="Service discovery events published, by outcome (update, error).",
    labels=("service", "outcome"),
    otel="kitobs.sd.events",
)
#: ``kitobs_sd_last_update_timestamp_seconds``: when a service's set last updated.
SD_LAST_UPDATE: MetricSpec[Gauge] = MetricSpec(
    name="kitobs_sd_last_update_timestamp",
    kind="gauge",
    unit="seconds",
    help="Unix time of the last good set of instances for a service (alert on its age).",
    labels=("service",),
    otel="kitobs.sd.last_update.timestamp",
)
#: ``kitobs_sd_factory_errors_total``: instances the endpoint factory failed on.
SD_FACTORY_ERRORS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_sd_factory_errors",
    kind="counter",
    unit="",
    help="Instances skipped because the endpoint factory raised.",
    labels=("service",),
    otel="kitobs.sd.factory_errors",
)
#: ``kitobs_lb_attempts_total``: attempts of retried calls, by outcome.
LB_ATTEMPTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_lb_attempts",
    kind="counter",
    unit="",
    help="Attempts of retried calls, by outcome (success, error, timeout, no_endpoints).",
    labels=("service", "outcome"),
    otel="kitobs.lb.attempts",
)
#: ``kitobs_lb_attempts_per_call``: attempts one retried call made.
LB_ATTEMPTS_PER_CALL: MetricSpec[Histogram] = MetricSpec(
    name="kitobs_lb_attempts_per_call",
    kind="histogram",
    unit="",
    help="Attempts one retried call made.",
    labels=("service",),
    otel="kitobs.lb.attempts_per_call",
    buckets=(1.0, 2.0, 3.0, 4.0, 5.0, 8.0),
)
#: ``kitobs_lb_no_endpoints_total``: calls that found no endpoint.
LB_NO_ENDPOINTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_lb_no_endpoints",
    kind="counter",
    unit="",
    help="Attempts that found no endpoint to call.",
    labels=("service",),
    otel="kitobs.lb.no_endpoints",
)
#: ``kitobs_ratelimit_decisions_total``: limiter decisions, allowed or limited.
RATELIMIT_DECISIONS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_ratelimit_decisions",
    kind="counter",
    unit="",
    help="Rate limiter decisions, by decision (allowed, limited).",
    labels=("limiter", "decision"),
    otel="kitobs.ratelimit.decisions",
)
#: ``kitobs_ratelimit_wait_duration_seconds``: waits of the delaying limiter.
RATELIMIT_WAIT_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="kitobs_ratelimit_wait_duration",
    kind="histogram",
    unit="seconds",
    help="Time a delaying rate limiter held calls before letting them through.",
    labels=("limiter",),
    otel="kitobs.ratelimit.wait.duration",
    buckets=DURATION_BUCKETS,
)
#: ``kitobs_ratelimit_keys_evicted_total``: buckets a keyed limiter evicted.
RATELIMIT_KEYS_EVICTED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_ratelimit_keys_evicted",
    kind="counter",
    unit="",
    help="Buckets a keyed rate limiter evicted (least recently used) to stay within its key bound.",
    labels=("limiter",),
    otel="kitobs.ratelimit.keys.evicted",
)
#: ``kitobs_auth_failures_total``: requests auth refused, by scheme and reason.
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
#: ``kitobs_auth_jwks_refreshes_total``: JWKS fetches, by result.
AUTH_JWKS_REFRESHES: MetricSpec[Counter] = MetricSpec(
    name="kitobs_auth_jwks_refreshes",
    kind="counter",
    unit="",
    help="JWKS key set fetches, by result (success, failure).",
    labels=("result",),
    otel="kitobs.auth.jwks.refreshes",
)
# The messaging transports (NATS, AMQP). messaging_destination_name is the subscription's subject
# pattern or the queue's name, never a concrete subject a client chose: it stays bounded.
_MESSAGING_LABELS = (
    "messaging_system",
    "messaging_operation_name",
    "messaging_destination_name",
    "error_type",
)
#: ``messaging_client_operation_duration_seconds``: publishes and requests, by destination.
MESSAGING_CLIENT_OPERATION_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="messaging_client_operation_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of messaging client operations (publish, request/reply, settle).",
    labels=_MESSAGING_LABELS,
    otel="messaging.client.operation.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
#: ``messaging_process_duration_seconds``: messages a subscriber processed.
MESSAGING_PROCESS_DURATION: MetricSpec[Histogram] = MetricSpec(
    name="messaging_process_duration",
    kind="histogram",
    unit="seconds",
    help="Duration of processing one received message, by subscription (subject pattern, queue).",
    labels=_MESSAGING_LABELS,
    otel="messaging.process.duration",
    buckets=DURATION_BUCKETS,
    optional_labels=("error_type",),
)
#: ``messaging_client_sent_messages_total``: messages sent, by destination.
MESSAGING_CLIENT_SENT_MESSAGES: MetricSpec[Counter] = MetricSpec(
    name="messaging_client_sent_messages",
    kind="counter",
    unit="",
    help="Messages a client sent or tried to send; error_type on those that failed.",
    labels=_MESSAGING_LABELS,
    otel="messaging.client.sent.messages",
    optional_labels=("error_type",),
)
#: ``messaging_client_consumed_messages_total``: messages received.
MESSAGING_CLIENT_CONSUMED_MESSAGES: MetricSpec[Counter] = MetricSpec(
    name="messaging_client_consumed_messages",
    kind="counter",
    unit="",
    help=(
        "Messages delivered to a consumer; error_type on those dropped before processing "
        "(e.g. a slow consumer's)."
    ),
    labels=_MESSAGING_LABELS,
    otel="messaging.client.consumed.messages",
    optional_labels=("error_type",),
)
#: ``kitobs_messaging_settlements_total``: acks, nacks, requeues and rejects.
MESSAGING_SETTLEMENTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_settlements",
    kind="counter",
    unit="",
    help="Messages a consumer settled, by settlement (ack, nack, requeue, reject).",
    labels=("messaging_system", "messaging_destination_name", "settlement"),
    otel="kitobs.messaging.settlements",
)
#: ``kitobs_messaging_reconnects_total``: broker reconnections, by system.
MESSAGING_RECONNECTS: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_reconnects",
    kind="counter",
    unit="",
    help="Reconnections of a messaging client to its server after a lost connection.",
    labels=("messaging_system",),
    otel="kitobs.messaging.reconnects",
)
#: ``kitobs_messaging_returned_total``: unroutable messages the broker returned.
MESSAGING_RETURNED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_messaging_returned",
    kind="counter",
    unit="",
    help="Messages the broker returned as unroutable (published mandatory, no queue bound).",
    labels=("messaging_system", "messaging_destination_name"),
    otel="kitobs.messaging.returned",
)
#: ``kitobs_messaging_dead_lettered_total``: poison messages given up on.
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
    SD_INSTANCES,
    SD_EVENTS,
    SD_LAST_UPDATE,
    SD_FACTORY_ERRORS,
    LB_ATTEMPTS,
    LB_ATTEMPTS_PER_CALL,
    LB_NO_ENDPOINTS,
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
