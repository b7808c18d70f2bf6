"""Smoke test: a push through the real Pushgateway is read back from it and from Prometheus."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

from tests.support import servers

pytestmark = pytest.mark.integration

JOB = "kitobs_smoke_batch"


def test_push_reaches_pushgateway_and_prometheus(
    pushgateway_addr: str, prometheus_url: str
) -> None:
    instance = uuid.uuid4().hex  # a group of our own: other pushes and older runs stay apart
    registry = CollectorRegistry()
    Counter("kitobs_smoke_items", "Items processed.", registry=registry).inc(7)
    Gauge("kitobs_smoke_last_run", "Last run, seconds.", registry=registry).set(1234.5)

    push_to_gateway(
        pushgateway_addr, job=JOB, grouping_key={"instance": instance}, registry=registry
    )
    try:
        groups = [
            g
            for g in servers.pushgateway_metrics(pushgateway_addr)
            if g["labels"].get("instance") == instance
        ]
        assert len(groups) == 1
        group = groups[0]
        assert group["labels"] == {"job": JOB, "instance": instance}
        assert group["last_push_successful"] is True
        items = group["kitobs_smoke_items_total"]
        assert items["type"] == "COUNTER"
        assert [m["value"] for m in items["metrics"]] == ["7"]
        assert [m["value"] for m in group["kitobs_smoke_last_run"]["metrics"]] == ["1234.5"]

        # honor_labels keeps the pushed job and instance instead of the Pushgateway's own.
        result = servers.wait_for_prometheus(
            prometheus_url, f'kitobs_smoke_items_total{{instance="{instance}"}}'
        )
        assert [(r["metric"]["job"], r["value"][1]) for r in result] == [(JOB, "7")]
    finally:
        servers.pushgateway_delete(pushgateway_addr, JOB, {"instance": instance})

    remaining = servers.pushgateway_metrics(pushgateway_addr)
    assert not [g for g in remaining if g["labels"].get("instance") == instance]
