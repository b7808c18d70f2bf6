"""Live: a real Prometheus scrapes the demo under load, and every panel of every shipped dashboard
returns data through the Prometheus HTTP API, with its template variables filled in.

The demo runs with the real NATS server and RabbitMQ broker scripts/services starts, so its
``/relay`` worker fills the messaging row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kitobs.dashboards import build
from tests.dashboards.queries import all_values, panel_queries, variable_queries
from tests.demo.demo_process import start_demo, stop_demo
from tests.support.servers import prometheus_query, require_env, wait_for_prometheus


def _series(url: str, selector: str) -> list[dict[str, Any]]:
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"match[]": selector})
    with urllib.request.urlopen(f"{url}/api/v1/series?{query}", timeout=10) as response:
        data: list[dict[str, Any]] = json.load(response)["data"]
    return data


@pytest.mark.integration
@pytest.mark.slow
def test_every_dashboard_panel_returns_data_from_the_demo(
    tmp_path: Path, prometheus_url: str, app_port: str
) -> None:
    brokers = (
        ("--nats", require_env("KITOBSTEST_NATS_URL")),
        ("--amqp", require_env("KITOBSTEST_AMQP_URL")),
    )
    demo = start_demo(
        tmp_path,
        "--load",
        "40",
        "--grpc-port",
        "0",
        *(arg for pair in brokers for arg in pair),
        port=int(app_port),
    )
    try:
        # Two scrapes with traffic in between, so that rate() and increase() have data.
        wait_for_prometheus(
            prometheus_url,
            'count_over_time(http_server_request_duration_seconds_count{job="app"}[1m]) >= 3',
            timeout=60,
        )
        wait_for_prometheus(
            prometheus_url,
            'count_over_time(rpc_server_call_duration_seconds_count{job="app"}[1m]) >= 3',
            timeout=30,
        )
        time.sleep(2)
        empty: list[str] = []
        checked = 0
        for name, dashboard in build().items():
            values = all_values(dashboard)
            for selector, label in variable_queries(dashboard, values):
                if not any(label in s for s in _series(prometheus_url, selector)):
                    empty.append(f"{name}: variable label_values({selector}, {label})")
            for expr in panel_queries(dashboard, values):
                checked += 1
                if not prometheus_query(prometheus_url, expr):
                    empty.append(f"{name}: {expr}")
        assert checked >= 20
        assert not empty, "queries with no data:\n" + "\n".join(empty)
    finally:
        assert stop_demo(demo) == 0
