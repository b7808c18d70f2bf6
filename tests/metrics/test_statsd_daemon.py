"""statsd backend against the real statsd daemon (Etsy statsd 0.9.0) that scripts/test starts.

The daemon flushes every second into a JSON-lines file (tests/support/jsonl_backend.js); each
test uses a unique prefix and reads the flushes after its own start. Counters are summed over
every flush after the start, so a provider flush that straddles two daemon flushes still counts.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kitobs.metrics import statsd
from tests.support import servers

pytestmark = pytest.mark.integration

_TIMEOUT = 15.0


@pytest.fixture(params=["udp", "tcp"])
def address(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(transport, host:port) of the daemon, once over UDP and once over TCP."""
    name = "KITOBSTEST_STATSD_ADDR" if request.param == "udp" else "KITOBSTEST_STATSD_TCP_ADDR"
    return request.param, servers.require_env(name)


@pytest.fixture
def prefix() -> str:
    return "kt" + uuid.uuid4().hex[:10]


@pytest.fixture
def make(address: tuple[str, str], statsd_flush_file: str) -> Iterator[Any]:
    providers: list[statsd.Provider] = []
    transport, addr = address

    def build(**kwargs: Any) -> statsd.Provider:
        p = statsd.Provider(addr, transport=transport, flush_interval=0.1, **kwargs)
        providers.append(p)
        return p

    yield build
    for p in providers:
        p.close()


def _flushes(path: str, start: int) -> list[dict[str, Any]]:
    return servers.read_statsd_flushes(path, start)


def _settled(path: str, start: int, done: Any) -> list[dict[str, Any]]:
    """Flushes after *start* once *done(flushes)* holds, plus one more flush (nothing late)."""
    deadline = time.monotonic() + _TIMEOUT
    while True:
        flushes = _flushes(path, start)
        if done(flushes):
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"statsd did not flush the expected data in {_TIMEOUT} s")
        time.sleep(0.1)
    n = len(flushes)
    while len(flushes) <= n and time.monotonic() < deadline + _TIMEOUT:
        time.sleep(0.1)
        flushes = _flushes(path, start)
    return flushes


def _total(flushes: list[dict[str, Any]], section: str, key: str) -> float:
    return float(sum(f[section].get(key, 0) for f in flushes))


def test_etsy_counts_sampling_and_timers(make: Any, prefix: str, statsd_flush_file: str) -> None:
    start = servers.statsd_flush_offset(statsd_flush_file)
    draws = itertools.cycle([0.2, 0.8])  # with rate 0.5: every other call kept
    p = make(prefix=prefix, random=lambda: next(draws))
    jobs = p.counter("jobs", help="Jobs.", labels=("queue",))
    for _ in range(250):
        jobs.labels("fast").add()
    jobs.labels("slow").add(2.5)
    sampled = p.counter("sampled", help="Sampled.", sample_rate=0.5)
    for _ in range(100):
        sampled.add(3)  # 50 kept, sent as 150|c|@0.5, scaled back to 300 by the daemon
    lat = p.histogram("lat", help="Latency.", unit="seconds")
    for seconds in (0.01, 0.02, 0.03, 0.04):
        lat.observe(seconds)

    fast, slow, samp = f"{prefix}.jobs.fast", f"{prefix}.jobs.slow", f"{prefix}.sampled"
    flushes = _settled(
        statsd_flush_file,
        start,
        lambda fl: (
            _total(fl, "counters", fast) >= 250
            and _total(fl, "counters", samp) >= 300
            and any(f"{prefix}.lat" in f["timers"] for f in fl)
        ),
    )
    assert _total(flushes, "counters", fast) == 250
    assert _total(flushes, "counters", slow) == 2.5
    assert _total(flushes, "counters", samp) == 300
    timers = sorted(v for f in flushes for v in f["timers"].get(f"{prefix}.lat", []))
    assert timers == [10, 20, 30, 40]  # milliseconds
    # Self-metrics exist from the start, at zero.
    assert _total(flushes, "counters", f"{prefix}.kitobs.telemetry.dropped.metrics.queue_full") == 0
    assert any(
        f"{prefix}.kitobs.telemetry.dropped.metrics.queue_full" in f["counters"] for f in flushes
    )


def _gauge_after(path: str, start: int, key: str, want: float) -> float:
    deadline = time.monotonic() + _TIMEOUT
    last = None
    while time.monotonic() < deadline:
        for flush in _flushes(path, start):
            if key in flush["gauges"]:
                last = flush["gauges"][key]
        if last == want:
            return float(last)
        time.sleep(0.1)
    raise AssertionError(f"gauge {key}: want {want}, last flushed {last}")


def test_gauges_keep_absolute_value_across_flushes(
    make: Any, prefix: str, statsd_flush_file: str
) -> None:
    p = make(prefix=prefix)
    g = p.gauge("depth", help="Depth.")
    key = f"{prefix}.depth"
    start = servers.statsd_flush_offset(statsd_flush_file)
    g.set(10)
    assert _gauge_after(statsd_flush_file, start, key, 10) == 10
    start = servers.statsd_flush_offset(statsd_flush_file)
    g.add(5)  # go-kit #578 would send 5 here
    assert _gauge_after(statsd_flush_file, start, key, 15) == 15
    start = servers.statsd_flush_offset(statsd_flush_file)
    g.add(-20)  # sent as 0|g then -5|g: a bare -5|g would be a delta to 15 → 10
    assert _gauge_after(statsd_flush_file, start, key, -5) == -5


def test_dogstatsd_tags_as_the_daemon_parses_them(
    make: Any, prefix: str, statsd_flush_file: str
) -> None:
    start = servers.statsd_flush_offset(statsd_flush_file)
    p = make(prefix=prefix, flavor="dogstatsd", common_labels={"env": "prod"})
    p.counter("req", help="Req.", labels=("method", "code")).labels("GET", "200").add(7)
    p.gauge("temp", help="Temp.", labels=("room",)).labels("a").set(21)
    p.histogram("size", help="Size.", unit="bytes", labels=("kind",)).labels("x").observe(5)
    d = make(prefix=prefix + "d", flavor="dogstatsd", dogstatsd_histogram="d")
    d.histogram("payload", help="Payload.", unit="bytes").observe(4)
    p.histogram("lat", help="Latency.", unit="seconds").observe(0.25)

    req = f"{prefix}.req;method=GET;code=200;env=prod"
    size = f"{prefix}.size;kind=x;env=prod"
    payload = f"{prefix}d.payload"
    flushes = _settled(
        statsd_flush_file,
        start,
        lambda fl: (
            _total(fl, "counters", req) >= 7
            and _total(fl, "counters", size) >= 5
            and _total(fl, "counters", payload) >= 4
        ),
    )
    assert _total(flushes, "counters", req) == 7
    # The daemon has no histogram or distribution type: it counts |h and |d as counters.
    assert _total(flushes, "counters", size) == 5
    assert _total(flushes, "counters", payload) == 4
    assert not any(size in f["timers"] or payload in f["timers"] for f in flushes)
    gauges = {(k, v) for f in flushes for k, v in f["gauges"].items() if k.startswith(prefix)}
    assert gauges == {(f"{prefix}.temp;room=a;env=prod", 21)}
    lat = [v for f in flushes for v in f["timers"].get(f"{prefix}.lat;env=prod", [])]
    assert lat == [250]
