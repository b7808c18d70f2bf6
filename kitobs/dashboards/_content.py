"""The dashboards kitobs ships: what each panel shows, built from `kitobs.contract`.

Three dashboards share the ``kitobs`` tag and link to each other:

- ``kitobs-overview``: summary numbers, then RED (rate, errors, duration) per endpoint and route;
- ``kitobs-red``: RED by transport: HTTP server and client, gRPC (RPC) server and client;
- ``kitobs-runtime``: kitobs' own health (dropped telemetry, folded label sets) and the process.
"""

from __future__ import annotations

from collections.abc import Sequence

from kitobs import contract
from kitobs.dashboards import _promql as q
from kitobs.dashboards._grafana import (
    JSON,
    Cell,
    Section,
    dashboard,
    query_variable,
    stat,
    target,
    timeseries,
)

__all__ = ["QUANTILES", "PROCESS_METRICS", "dashboards"]

#: Latency quantiles every latency panel shows.
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)

# prometheus_client's default process and GC collectors: outside the contract, named as they emit.
_CPU = "process_cpu_seconds_total"
_RSS = "process_resident_memory_bytes"
_FDS = "process_open_fds"
_GC = "python_gc_collections_total"
_GC_GENERATION = "generation"
#: Process and runtime metric names the dashboards query, from prometheus_client's collectors.
PROCESS_METRICS: tuple[str, ...] = (_CPU, _RSS, _FDS, _GC)

_HTTP = contract.HTTP_SERVER_REQUEST_DURATION
_ACTIVE = contract.HTTP_SERVER_ACTIVE_REQUESTS
_CLIENT = contract.HTTP_CLIENT_REQUEST_DURATION
_RPC_SERVER = contract.RPC_SERVER_CALL_DURATION
_RPC_CLIENT = contract.RPC_CLIENT_CALL_DURATION
_ENDPOINT = contract.ENDPOINT_DURATION
_BREAKER_STATE = contract.BREAKER_STATE
_BREAKER_TRANSITIONS = contract.BREAKER_TRANSITIONS
_BREAKER_REJECTED = contract.BREAKER_REJECTED
_DECISIONS = contract.RATELIMIT_DECISIONS
_WAIT = contract.RATELIMIT_WAIT_DURATION
_EVICTED = contract.RATELIMIT_KEYS_EVICTED
_AUTH_FAILURES = contract.AUTH_FAILURES
_JWKS = contract.AUTH_JWKS_REFRESHES
_SD_INSTANCES = contract.SD_INSTANCES
_SD_EVENTS = contract.SD_EVENTS
_SD_LAST_UPDATE = contract.SD_LAST_UPDATE
_SD_FACTORY_ERRORS = contract.SD_FACTORY_ERRORS
_LB_ATTEMPTS = contract.LB_ATTEMPTS
_LB_PER_CALL = contract.LB_ATTEMPTS_PER_CALL
_LB_NO_ENDPOINTS = contract.LB_NO_ENDPOINTS
_MSG_OPERATION = contract.MESSAGING_CLIENT_OPERATION_DURATION
_MSG_PROCESS = contract.MESSAGING_PROCESS_DURATION
_MSG_SENT = contract.MESSAGING_CLIENT_SENT_MESSAGES
_MSG_CONSUMED = contract.MESSAGING_CLIENT_CONSUMED_MESSAGES
_MSG_SETTLEMENTS = contract.MESSAGING_SETTLEMENTS
_MSG_RECONNECTS = contract.MESSAGING_RECONNECTS
_MSG_RETURNED = contract.MESSAGING_RETURNED
_MSG_DEAD = contract.MESSAGING_DEAD_LETTERED
_DROPPED = contract.TELEMETRY_DROPPED
_FOLDED = contract.LABEL_SETS_FOLDED

_SUCCESS = contract.OUTCOMES[0]
#: Outcomes of calls the toolkit middleware refused: errors, and also shown on their own.
_REFUSED = ("rejected", "limited", "unauthenticated")


def _legend(spec: q.Spec, *labels: str, prefix: str = "") -> str:
    """Legend template naming each series by its labels, e.g. ``p99 {{http_route}}``."""
    parts = [prefix] if prefix else []
    parts += ["{{" + q.label(spec, name) + "}}" for name in labels]
    return " ".join(parts)


def _http_errors(spec: q.Spec) -> list[list[str]]:
    # A failed HTTP request: a 5xx answer, or an error_type (exception, timeout) without one.
    return [
        [q.regex(spec, "http_response_status_code", "5..")],
        [q.present(spec, "error_type")],
    ]


def _rpc_errors(spec: q.Spec) -> list[list[str]]:
    return [[q.present(spec, "error_type")]]


def _endpoint_errors(spec: q.Spec) -> list[list[str]]:
    return [[q.ne(spec, "outcome", _SUCCESS)]]


def _scoped(name: str) -> str:
    return f"{name}{{{', '.join(q.SCOPE)}}}"


def _rate_panel(
    title: str, spec: q.Spec, by: Sequence[str], matchers: Sequence[str], *, stack: bool = False
) -> JSON:
    return timeseries(
        title,
        f"Requests per second from `{spec.prometheus_name}_count`, by {', '.join(by)}.",
        "reqps",
        [target(q.request_rate(spec, by, matchers), _legend(spec, *by))],
        stack=stack,
    )


def _error_panel(
    title: str,
    spec: q.Spec,
    by: Sequence[str],
    errors: Sequence[Sequence[str]],
    matchers: Sequence[str],
    what: str,
) -> JSON:
    return timeseries(
        title,
        f"Share of failed calls ({what}) in `{spec.prometheus_name}_count`, by {', '.join(by)}.",
        "percentunit",
        [target(q.error_ratio(spec, by, errors, matchers), _legend(spec, *by))],
        max_value=1,
    )


def _latency_panel(title: str, spec: q.Spec, by: Sequence[str], matchers: Sequence[str]) -> JSON:
    quantiles = "/".join(f"p{round(p * 100)}" for p in QUANTILES)
    return timeseries(
        title,
        f"Latency {quantiles} from `{spec.prometheus_name}_bucket`, by {', '.join(by)}; "
        "exemplars link to traces.",
        "s",
        [
            target(
                q.quantile(p, spec, by, matchers),
                _legend(spec, *by, prefix=f"p{round(p * 100)}"),
                exemplar=True,
            )
            for p in QUANTILES
        ],
    )


def _scope_variables() -> list[JSON]:
    # kitobs' own counters exist at zero from start, so every kitobs process shows up here.
    dropped = _DROPPED.prometheus_name
    return [
        query_variable("job", "Job", dropped, "job"),
        query_variable("instance", "Instance", f'{dropped}{{job=~"$job"}}', "instance"),
    ]


def _label_variable(name: str, title: str, spec: q.Spec, label: str) -> JSON:
    return query_variable(name, title, q.series(spec, "_count"), q.label(spec, label))


def _counter_rate_panel(
    title: str, spec: q.Spec, by: Sequence[str], unit: str = "cps", *, stack: bool = False
) -> JSON:
    return timeseries(
        title,
        f"Rate of `{spec.prometheus_name}`, by {', '.join(by)}.",
        unit,
        [
            target(
                q.sum_by([q.label(spec, name) for name in by], q.rate(q.series(spec))),
                _legend(spec, *by),
            )
        ],
        stack=stack,
    )


def _resilience() -> tuple[Cell, ...]:
    refused = [q.regex(_ENDPOINT, "outcome", "|".join(_REFUSED))]
    return (
        Cell(
            timeseries(
                "Circuit breaker state",
                f"`{_BREAKER_STATE.prometheus_name}` by breaker: 0 closed, 1 half-open, 2 open.",
                "short",
                [
                    target(
                        q.max_by([q.label(_BREAKER_STATE, "breaker")], q.series(_BREAKER_STATE)),
                        _legend(_BREAKER_STATE, "breaker"),
                    )
                ],
                max_value=2,
            ),
            w=6,
        ),
        Cell(
            _counter_rate_panel(
                "Breaker transitions", _BREAKER_TRANSITIONS, ("breaker", "from", "to")
            ),
            w=6,
        ),
        Cell(
            _counter_rate_panel(
                "Calls breakers refused", _BREAKER_REJECTED, ("breaker", "reason"), stack=True
            ),
            w=6,
        ),
        Cell(
            _rate_panel(
                "Refused calls by endpoint and outcome",
                _ENDPOINT,
                ("endpoint", "outcome"),
                refused,
                stack=True,
            ),
            w=6,
        ),
        Cell(
            _counter_rate_panel(
                "Rate-limit decisions", _DECISIONS, ("limiter", "decision"), stack=True
            ),
            w=6,
        ),
        Cell(_rate_panel("Calls a limiter delayed", _WAIT, ("limiter",), ()), w=6),
        Cell(_latency_panel("Rate-limit waits", _WAIT, ("limiter",), ()), w=6),
        Cell(_counter_rate_panel("Rate-limit keys evicted", _EVICTED, ("limiter",)), w=6),
        Cell(
            _counter_rate_panel(
                "Auth failures by scheme and reason",
                _AUTH_FAILURES,
                ("scheme", "reason"),
                stack=True,
            ),
            w=6,
        ),
        Cell(_counter_rate_panel("JWKS fetches by result", _JWKS, ("result",)), w=12),
    )


def _quantile_panel(title: str, spec: q.Spec, by: Sequence[str], unit: str) -> JSON:
    # As a latency panel, for a histogram of something other than seconds.
    quantiles = "/".join(f"p{round(p * 100)}" for p in QUANTILES)
    return timeseries(
        title,
        f"{quantiles} from `{spec.prometheus_name}_bucket`, by {', '.join(by)}.",
        unit,
        [
            target(
                q.quantile(p, spec, by, ()),
                _legend(spec, *by, prefix=f"p{round(p * 100)}"),
                exemplar=True,  # the calls' traces, as on the latency panels
            )
            for p in QUANTILES
        ],
    )


def _discovery() -> tuple[Cell, ...]:
    service = [q.label(_SD_INSTANCES, "service")]
    return (
        Cell(
            timeseries(
                "Instances by service",
                f"`{_SD_INSTANCES.prometheus_name}`: what discovery last reported.",
                "short",
                [
                    target(
                        q.sum_by(service, q.series(_SD_INSTANCES)),
                        _legend(_SD_INSTANCES, "service"),
                    )
                ],
            ),
            w=6,
        ),
        Cell(
            timeseries(
                "Seconds since the last discovery update",
                f"time() minus `{_SD_LAST_UPDATE.prometheus_name}`: growing means a stale view.",
                "dtdurations",
                [
                    target(
                        "time() - "
                        + q.max_by(
                            [q.label(_SD_LAST_UPDATE, "service")], q.series(_SD_LAST_UPDATE)
                        ),
                        _legend(_SD_LAST_UPDATE, "service"),
                    )
                ],
            ),
            w=6,
        ),
        Cell(_counter_rate_panel("Discovery events", _SD_EVENTS, ("service", "outcome")), w=6),
        Cell(_counter_rate_panel("Endpoint factory errors", _SD_FACTORY_ERRORS, ("service",)), w=6),
        Cell(
            _counter_rate_panel(
                "Balanced call attempts by outcome",
                _LB_ATTEMPTS,
                ("service", "outcome"),
                stack=True,
            ),
            w=6,
        ),
        Cell(_rate_panel("Retried calls by service", _LB_PER_CALL, ("service",), ()), w=6),
        Cell(_quantile_panel("Attempts per call", _LB_PER_CALL, ("service",), "short"), w=6),
        Cell(_counter_rate_panel("Calls with no endpoint", _LB_NO_ENDPOINTS, ("service",)), w=6),
    )


def _overview() -> JSON:
    route = [q.regex(_HTTP, "http_route", "$route")]
    endpoint = [q.regex(_ENDPOINT, "endpoint", "$endpoint")]
    http_errors = _http_errors(_HTTP)
    summary = (
        Cell(
            stat(
                "HTTP requests/s",
                "All HTTP requests served.",
                "reqps",
                (q.request_rate(_HTTP, (), route)),
            ),
            w=4,
            h=4,
        ),
        Cell(
            stat(
                "HTTP error ratio",
                "5xx answers and failed requests over all requests.",
                "percentunit",
                q.error_ratio(_HTTP, (), http_errors, route),
                warn=0.01,
                alert=0.05,
            ),
            w=4,
            h=4,
        ),
        Cell(
            stat(
                "HTTP p99 latency",
                "99th percentile of HTTP request duration.",
                "s",
                q.quantile(0.99, _HTTP, (), route),
            ),
            w=4,
            h=4,
        ),
        Cell(
            stat(
                "HTTP requests in flight",
                "Requests being served now.",
                "short",
                q.sum_by((), q.series(_ACTIVE)),
            ),
            w=4,
            h=4,
        ),
        Cell(
            stat(
                "Endpoint calls/s",
                "All endpoint calls.",
                "reqps",
                (q.request_rate(_ENDPOINT, (), endpoint)),
            ),
            w=4,
            h=4,
        ),
        Cell(
            stat(
                "Endpoint error ratio",
                "Calls ending in a business error, an exception or refused by toolkit middleware "
                "(rejected, limited, unauthenticated) over all calls.",
                "percentunit",
                q.error_ratio(_ENDPOINT, (), _endpoint_errors(_ENDPOINT), endpoint),
                warn=0.01,
                alert=0.05,
            ),
            w=4,
            h=4,
        ),
    )
    endpoints = (
        Cell(
            _rate_panel(
                "Calls by endpoint and outcome",
                _ENDPOINT,
                ("endpoint", "outcome"),
                endpoint,
                stack=True,
            )
        ),
        Cell(
            _error_panel(
                "Error ratio by endpoint",
                _ENDPOINT,
                ("endpoint",),
                _endpoint_errors(_ENDPOINT),
                endpoint,
                "business error or exception",
            )
        ),
        Cell(_latency_panel("Latency by endpoint", _ENDPOINT, ("endpoint",), endpoint)),
    )
    routes = (
        Cell(_rate_panel("Requests by route", _HTTP, ("http_route",), route)),
        Cell(
            _error_panel(
                "Error ratio by route",
                _HTTP,
                ("http_route",),
                http_errors,
                route,
                "5xx or error_type",
            )
        ),
        Cell(_latency_panel("Latency by route", _HTTP, ("http_route",), route)),
    )
    return dashboard(
        "kitobs-overview",
        "kitobs / Service overview",
        "Rate, errors and duration of a kitobs-instrumented service, per endpoint and per route.",
        [
            *_scope_variables(),
            _label_variable("route", "Route", _HTTP, "http_route"),
            _label_variable("endpoint", "Endpoint", _ENDPOINT, "endpoint"),
        ],
        [
            Section("Summary", summary),
            Section("Endpoints", endpoints),
            Section("HTTP routes", routes),
            Section("Resilience: breakers, rate limits, auth", _resilience()),
            Section("Discovery and load balancing", _discovery()),
        ],
    )


def _messaging() -> tuple[Cell, ...]:
    where = ("messaging_system", "messaging_destination_name")
    op = ("messaging_system", "messaging_operation_name", "messaging_destination_name")
    return (
        Cell(_counter_rate_panel("Messages sent", _MSG_SENT, op, stack=True), w=6),
        Cell(_counter_rate_panel("Messages consumed", _MSG_CONSUMED, where, stack=True), w=6),
        Cell(_rate_panel("Client operations", _MSG_OPERATION, op, ()), w=6),
        Cell(_latency_panel("Client operation latency", _MSG_OPERATION, where, ()), w=6),
        Cell(_rate_panel("Messages processed", _MSG_PROCESS, where, ()), w=6),
        Cell(_latency_panel("Processing latency", _MSG_PROCESS, where, ()), w=6),
        Cell(
            _error_panel(
                "Processing error ratio",
                _MSG_PROCESS,
                where,
                _rpc_errors(_MSG_PROCESS),
                (),
                "error_type",
            ),
            w=6,
        ),
        Cell(
            _counter_rate_panel(
                "Settlements", _MSG_SETTLEMENTS, (*where, "settlement"), stack=True
            ),
            w=6,
        ),
        Cell(_counter_rate_panel("Returned (unroutable) messages", _MSG_RETURNED, where), w=8),
        Cell(_counter_rate_panel("Dead-lettered messages", _MSG_DEAD, where), w=8),
        Cell(
            _counter_rate_panel("Broker reconnections", _MSG_RECONNECTS, ("messaging_system",)), w=8
        ),
    )


def _red() -> JSON:
    route = [q.regex(_HTTP, "http_route", "$route")]
    method = [q.regex(_RPC_SERVER, "rpc_method", "$rpc_method")]
    http_server = (
        Cell(
            _rate_panel(
                "Requests by route and method", _HTTP, ("http_route", "http_request_method"), route
            )
        ),
        Cell(
            _rate_panel(
                "Responses by status code", _HTTP, ("http_response_status_code",), route, stack=True
            )
        ),
        Cell(
            timeseries(
                "Requests in flight by method",
                f"`{_ACTIVE.prometheus_name}`, by http_request_method.",
                "short",
                [
                    target(
                        q.sum_by([q.label(_ACTIVE, "http_request_method")], q.series(_ACTIVE)),
                        _legend(_ACTIVE, "http_request_method"),
                    )
                ],
            )
        ),
        Cell(
            _error_panel(
                "Error ratio by route",
                _HTTP,
                ("http_route",),
                _http_errors(_HTTP),
                route,
                "5xx or error_type",
            )
        ),
        Cell(_latency_panel("Latency by route", _HTTP, ("http_route",), route), w=16),
    )
    by_peer = ("server_address", "server_port")
    http_client = (
        Cell(_rate_panel("Client requests by server", _CLIENT, by_peer, ())),
        Cell(
            _error_panel(
                "Client error ratio by server",
                _CLIENT,
                by_peer,
                _http_errors(_CLIENT),
                (),
                "5xx or error_type",
            )
        ),
        Cell(_latency_panel("Client latency by server", _CLIENT, by_peer, ())),
    )

    def rpc(spec: q.Spec, side: str, matchers: Sequence[str]) -> tuple[Cell, ...]:
        return (
            Cell(_rate_panel(f"{side} calls by method", spec, ("rpc_method",), matchers), w=6),
            Cell(
                _rate_panel(
                    f"{side} calls by status code", spec, ("rpc_status_code",), matchers, stack=True
                ),
                w=6,
            ),
            Cell(
                _error_panel(
                    f"{side} error ratio by method",
                    spec,
                    ("rpc_method",),
                    _rpc_errors(spec),
                    matchers,
                    "error_type",
                ),
                w=6,
            ),
            Cell(_latency_panel(f"{side} latency by method", spec, ("rpc_method",), matchers), w=6),
        )

    return dashboard(
        "kitobs-red",
        "kitobs / RED by transport",
        "Rate, errors and duration for each transport: HTTP server and client, gRPC server and "
        "client, messaging (NATS, AMQP).",
        [
            *_scope_variables(),
            _label_variable("route", "Route", _HTTP, "http_route"),
            _label_variable("rpc_method", "RPC method", _RPC_SERVER, "rpc_method"),
        ],
        [
            Section("HTTP server", http_server),
            Section("HTTP client", http_client),
            Section("gRPC server", rpc(_RPC_SERVER, "Server", method)),
            Section("gRPC client", rpc(_RPC_CLIENT, "Client", ())),
            Section("Messaging (NATS, AMQP)", _messaging()),
        ],
    )


def _runtime() -> JSON:
    def increase(spec: q.Spec) -> str:
        return q.sum_by((), f"increase({q.series(spec)}[$__range])")

    health = (
        Cell(
            stat(
                "Telemetry dropped",
                "Metrics, spans and log lines kitobs dropped in the time range rather than block.",
                "short",
                increase(_DROPPED),
                warn=1,
            ),
            w=4,
        ),
        Cell(
            stat(
                "Label sets folded",
                "Label sets the cardinality guard folded into the overflow series in the range.",
                "short",
                increase(_FOLDED),
                warn=1,
            ),
            w=4,
        ),
        Cell(
            timeseries(
                "Dropped telemetry by signal and reason",
                f"Rate of `{_DROPPED.prometheus_name}`.",
                "cps",
                [
                    target(
                        q.sum_by(
                            [q.label(_DROPPED, "signal"), q.label(_DROPPED, "reason")],
                            q.rate(q.series(_DROPPED)),
                        ),
                        _legend(_DROPPED, "signal", "reason"),
                    )
                ],
            )
        ),
        Cell(
            timeseries(
                "Folded label sets by metric",
                f"Rate of `{_FOLDED.prometheus_name}`.",
                "cps",
                [
                    target(
                        q.sum_by([q.label(_FOLDED, "metric")], q.rate(q.series(_FOLDED))),
                        _legend(_FOLDED, "metric"),
                    )
                ],
            )
        ),
    )
    process = (
        Cell(
            timeseries(
                "CPU",
                f"`{_CPU}` rate: 100% is one core busy.",
                "percentunit",
                [target(f"sum by (instance) ({q.rate(_scoped(_CPU))})", "{{instance}}")],
            ),
            w=6,
        ),
        Cell(
            timeseries(
                "Resident memory",
                f"`{_RSS}`.",
                "bytes",
                [target(f"sum by (instance) ({_scoped(_RSS)})", "{{instance}}")],
            ),
            w=6,
        ),
        Cell(
            timeseries(
                "Open file descriptors",
                f"`{_FDS}`.",
                "short",
                [target(f"sum by (instance) ({_scoped(_FDS)})", "{{instance}}")],
            ),
            w=6,
        ),
        Cell(
            timeseries(
                "GC collections",
                f"`{_GC}` rate, by generation.",
                "cps",
                [
                    target(
                        f"sum by (instance, {_GC_GENERATION}) ({q.rate(_scoped(_GC))})",
                        "{{instance}} gen {{" + _GC_GENERATION + "}}",
                    )
                ],
            ),
            w=6,
        ),
    )
    return dashboard(
        "kitobs-runtime",
        "kitobs / Runtime and kitobs health",
        "Telemetry kitobs dropped or folded, and the process: CPU, memory, file descriptors, GC.",
        _scope_variables(),
        [Section("kitobs health", health), Section("Process", process)],
    )


def dashboards() -> dict[str, JSON]:
    """dashboards builds every dashboard by file name, e.g. ``"kitobs-overview.json"``."""
    return {f"{d['uid']}.json": d for d in (_overview(), _red(), _runtime())}
