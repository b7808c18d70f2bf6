"""Smoke tests: counters, gauges and timers sent to the real statsd daemon reach its flushes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import statsd

from tests.support import servers

pytestmark = pytest.mark.integration


@pytest.fixture(params=["udp", "tcp"])
def client_and_prefix(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[statsd.StatsClient | statsd.TCPStatsClient, str]]:
    """A statsd client for one transport, with a key prefix unique to the test."""
    prefix = f"kitobs_smoke.{request.param}_{uuid.uuid4().hex[:12]}"
    client: statsd.StatsClient | statsd.TCPStatsClient
    if request.param == "udp":
        host, port = servers.split_addr(request.getfixturevalue("statsd_addr"))
        client = statsd.StatsClient(host, port, prefix=prefix)
    else:
        host, port = servers.split_addr(request.getfixturevalue("statsd_tcp_addr"))
        client = statsd.TCPStatsClient(host, port, prefix=prefix, timeout=5)
    try:
        yield client, prefix
    finally:
        client.close()


def test_counter_gauge_timer_reach_flush(
    client_and_prefix: tuple[statsd.StatsClient | statsd.TCPStatsClient, str],
    statsd_flush_file: str,
) -> None:
    client, prefix = client_and_prefix
    start = servers.statsd_flush_offset(statsd_flush_file)
    # One pipeline is one datagram (or one TCP write), so all of it lands in the same flush.
    with client.pipeline() as pipe:
        pipe.incr("requests", 5)
        pipe.decr("requests", 2)
        pipe.gauge("temperature", 42)
        pipe.gauge("temperature", 3, delta=True)
        for ms in (10, 20, 30, 40):
            pipe.timing("latency", ms)

    flush = servers.wait_for_statsd_key(
        statsd_flush_file, "counters", f"{prefix}.requests", start=start
    )

    assert flush["counters"][f"{prefix}.requests"] == 3
    assert flush["gauges"][f"{prefix}.temperature"] == 45
    assert sorted(flush["timers"][f"{prefix}.latency"]) == [10, 20, 30, 40]
    data = flush["timer_data"][f"{prefix}.latency"]
    assert (data["count"], data["sum"], data["mean"], data["upper_90"], data["lower"]) == (
        4,
        100,
        25,
        40,
        10,
    )


def test_admin_interface_reports_health(statsd_admin_addr: str) -> None:
    assert servers.statsd_admin(statsd_admin_addr, "health") == "health: up"
