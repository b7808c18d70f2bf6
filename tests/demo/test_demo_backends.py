"""Switching the demo to statsd and Zipkin by configuration alone: real statsd daemon, Zipkin
capture receiver validated against the Zipkin v2 spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo.demo_process import start_demo, stop_demo, wait_for
from tests.support.servers import read_statsd_flushes, require_env, statsd_flush_offset
from tests.support.zipkin import Receiver


@pytest.mark.integration
def test_demo_reports_to_statsd_and_zipkin_by_environment_only(
    tmp_path: Path, zipkin_receiver: Receiver
) -> None:
    receiver = zipkin_receiver
    statsd_addr = require_env("KITOBSTEST_STATSD_ADDR")
    flush_file = require_env("KITOBSTEST_STATSD_FLUSH_FILE")
    prefix = f"demo{tmp_path.name.replace('_', '').replace('-', '')[-10:]}"
    start = statsd_flush_offset(flush_file)
    env = {
        "KITOBS_METRICS_BACKEND": "statsd",
        "KITOBS_METRICS_STATSD_ADDRESS": statsd_addr,
        "KITOBS_METRICS_STATSD_FLUSH_INTERVAL": "0.2",
        "KITOBS_METRICS_STATSD_PREFIX": prefix,
        "KITOBS_TRACING_EXPORTER": "zipkin",
        "KITOBS_TRACING_ZIPKIN_ENDPOINT": receiver.url,
        "KITOBS_TRACING_FLUSH_INTERVAL": "0.2",
    }
    demo = start_demo(tmp_path, "--load", "20", env=env)
    try:
        status, _ = demo.get("/sum?a=1&b=2")
        assert status == 200
        # /metrics is not served: Prometheus is not configured.
        assert demo.get("/metrics")[0] == 404

        def statsd_keys() -> set[str]:
            keys: set[str] = set()
            for flush in read_statsd_flushes(flush_file, start):
                for kind in ("counters", "timers", "gauges"):
                    keys.update(k for k in flush.get(kind, {}) if k.startswith(prefix))
            return keys

        wait_for(
            lambda: any(".http.server.request.duration" in k for k in statsd_keys()), timeout=30
        )
        spans = receiver.wait_for(20, timeout=30)
    finally:
        assert stop_demo(demo) == 0

    keys = statsd_keys()
    assert any(k.startswith(f"{prefix}.http.server.request.duration") for k in keys), keys
    assert any(k.startswith(f"{prefix}.http.client.request.duration") for k in keys), keys
    assert any(k.startswith(f"{prefix}.kitobs.endpoint.duration") for k in keys), keys

    assert {s["localEndpoint"]["serviceName"] for s in spans} == {"kitobs-demo"}
    kinds = {s.get("kind") for s in spans}
    assert {"SERVER", "CLIENT"} <= kinds
    by_id = {s["id"]: s for s in spans}
    servers = [s for s in spans if s.get("kind") == "SERVER" and s.get("parentId") in by_id]
    assert servers, "no SERVER span whose parent (the load client's span) was exported"
    assert all(by_id[s["parentId"]]["traceId"] == s["traceId"] for s in servers)
    # Every body the demo posted validated against ListOfSpans (receiver.spans validates).
    assert len(receiver.spans()) >= len(spans)
