"""statsd backend, offline: line encoding per flavour, sampling, gauges, packing, threads.

Everything here reads the provider's own output (`Provider.write_to`) or packs lines directly;
sockets are in test_statsd_sockets.py and the real daemon in test_statsd_daemon.py.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import threading

import pytest

from kitobs import config, contract
from kitobs.errors import ConfigError, DuplicateMetricError
from kitobs.metrics import statsd
from kitobs.metrics._statsd_sender import pack, parse_address
from tests.metrics.harness_statsd import Line, Reader, parse_lines, statsd_provider


def _lines(provider: statsd.Provider, name: str = "") -> list[str]:
    out = io.BytesIO()
    provider.write_to(out)
    return [
        line
        for line in out.getvalue().decode().splitlines()
        if name and line.split(":")[0].split(",")[0].startswith(name)
    ]


# ---- encoding per flavour


@pytest.mark.parametrize(
    ("flavor", "etsy_labels", "want"),
    [
        ("etsy", "append", "app.http.requests.GET.200:3|c"),
        ("etsy", "drop", "app.http.requests:3|c"),
        ("dogstatsd", "append", "app.http.requests:3|c|#method:GET,code:200"),
        ("telegraf", "append", "app.http.requests,method=GET,code=200:3|c"),
    ],
)
def test_counter_line_per_flavor(flavor: str, etsy_labels: str, want: str) -> None:
    p = statsd_provider(flavor=flavor, prefix="app", etsy_labels=etsy_labels)
    c = p.counter("http_requests", help="Requests.", labels=("method", "code"))
    c.labels("GET", "200").add(2)
    c.with_labels(code="200", method="GET").add()
    assert _lines(p, "app.http.requests") == [want]


def test_labels_in_declared_order_and_empty_labels_absent() -> None:
    p = statsd_provider(flavor="etsy")
    c = p.counter("calls", help="Calls.", labels=("b", "a", "c"))
    c.with_labels(a="x", b="y").add()  # c never bound: empty, so no name segment
    assert _lines(p, "calls") == ["calls.y.x:1|c"]
    d = statsd_provider(flavor="dogstatsd")
    e = d.counter("calls", help="Calls.", labels=("b", "a", "c"))
    e.with_labels(a="x", b="y").add()
    assert _lines(d, "calls") == ["calls:1|c|#b:y,a:x"]


@pytest.mark.parametrize(
    ("flavor", "want"),
    [
        ("etsy", "r._users__id_.a_b_c:1|c"),
        ("dogstatsd", "r:1|c|#route:/users/_id_,v:a_b_c"),
        ("telegraf", "r,route=/users/_id_,v=a_b_c:1|c"),
    ],
)
def test_label_values_sanitised(flavor: str, want: str) -> None:
    p = statsd_provider(flavor=flavor)
    c = p.counter("r", help="R.", labels=("route", "v"))
    c.labels("/users/{id}", "a|b,c").add()
    assert _lines(p, "r") == [want]


def test_common_labels_are_tags_but_not_etsy() -> None:
    dog = statsd_provider(flavor="dogstatsd", common_labels={"env": "prod"})
    dog.counter("jobs", help="Jobs.").add()
    assert _lines(dog, "jobs") == ["jobs:1|c|#env:prod"]
    tel = statsd_provider(flavor="telegraf", common_labels={"env": "prod"})
    tel.counter("jobs", help="Jobs.").add()
    assert _lines(tel, "jobs") == ["jobs,env=prod:1|c"]
    etsy = statsd_provider(flavor="etsy", common_labels={"env": "prod"})
    etsy.counter("jobs", help="Jobs.").add()
    assert _lines(etsy, "jobs") == ["jobs:1|c"]


def test_names_follow_the_contract() -> None:
    p = statsd_provider(prefix="shop.api")
    h = p.declare(contract.HTTP_SERVER_REQUEST_DURATION)
    h.labels("GET", "/users/{id}", "200", "https", "").observe(0.25)
    want = contract.statsd_name(contract.HTTP_SERVER_REQUEST_DURATION.name, "shop.api")
    assert _lines(p, want) == [f"{want}.GET._users__id_.200.https:250|ms"]


@pytest.mark.parametrize(
    ("flavor", "unit", "histogram_type", "want"),
    [
        ("etsy", "seconds", "h", "d.x:31.5|ms"),
        ("etsy", "bytes", "h", "d.x:0.0315|ms"),
        ("dogstatsd", "seconds", "h", "d.x:31.5|ms"),
        ("dogstatsd", "bytes", "h", "d.x:0.0315|h"),
        ("dogstatsd", "bytes", "d", "d.x:0.0315|d"),
        ("telegraf", "bytes", "h", "d.x:0.0315|h"),
        ("telegraf", "seconds", "h", "d.x:31.5|ms"),
    ],
)
def test_histogram_types(flavor: str, unit: str, histogram_type: str, want: str) -> None:
    p = statsd_provider(flavor=flavor, dogstatsd_histogram=histogram_type)
    h = p.histogram("d_x", help="D.", unit=unit)
    h.observe(0.0315)
    assert _lines(p, "d.x") == [want]


# ---- counters, gauges, histograms


def test_counter_sends_changes_and_zero_once_at_start() -> None:
    p = statsd_provider()
    c = p.counter("jobs", help="Jobs.")
    assert _lines(p, "jobs") == ["jobs:0|c"]  # present from the start
    assert _lines(p, "jobs") == []  # nothing changed: nothing sent
    c.add(2)
    c.add(0.5)
    assert _lines(p, "jobs") == ["jobs:2.5|c"]
    c.add(1)
    assert _lines(p, "jobs") == ["jobs:1|c"]


def test_gauge_keeps_absolute_value_across_flushes() -> None:
    """go-kit #578: add after a flush continues from the value, not from zero."""
    p = statsd_provider()
    g = p.gauge("depth", help="Depth.")
    g.set(10)
    assert _lines(p, "depth") == ["depth:10|g"]
    assert _lines(p, "depth") == []
    g.add(5)
    assert _lines(p, "depth") == ["depth:15|g"]
    g.add(-20)
    # A signed value would be a delta to statsd: reset to 0, then the negative value.
    assert _lines(p, "depth") == ["depth:0|g", "depth:-5|g"]


def test_gauge_callback_read_at_flush() -> None:
    p = statsd_provider(flavor="dogstatsd")
    depth = [3.0]
    p.gauge("queue_depth", help="Depth.", callback=lambda: depth[0])
    assert _lines(p, "queue.depth") == ["queue.depth:3|g"]
    depth[0] = 7.5
    assert _lines(p, "queue.depth") == ["queue.depth:7.5|g"]
    p.gauge(
        "pool_size",
        help="Pools.",
        labels=("pool",),
        callback=lambda: {("a",): 1.0, ("b",): 2.0},
    )
    assert sorted(_lines(p, "pool.size")) == ["pool.size:1|g|#pool:a", "pool.size:2|g|#pool:b"]


def test_broken_callback_counted_not_raised() -> None:
    p = statsd_provider()

    def broken() -> float:
        raise RuntimeError("boom")

    p.gauge("bad", help="Bad.", callback=broken)
    assert _lines(p, "bad") == []
    assert p.dropped_lines()["invalid_value"] == 1


def test_histogram_sends_every_observation_in_ms() -> None:
    p = statsd_provider()
    h = p.histogram("lat", help="Latency.", unit="seconds")
    for v in (0.01, 0.02, 0.5):
        h.observe(v)
    assert _lines(p, "lat") == ["lat:10|ms", "lat:20|ms", "lat:500|ms"]


def test_recording_never_raises_and_counts_bad_values() -> None:
    p = statsd_provider()
    c = p.counter("c", help="C.")
    g = p.gauge("g", help="G.")
    h = p.histogram("h", help="H.")
    bad: list[object] = ["x", None, float("nan"), float("inf"), -1.0]
    for value in bad:
        c.add(value)  # type: ignore[arg-type]
    for value in bad[:4]:
        g.set(value)  # type: ignore[arg-type]
        g.add(value)  # type: ignore[arg-type]
        h.observe(value)  # type: ignore[arg-type]
    assert p.dropped_lines()["invalid_value"] == 5 + 3 * 4
    reader = Reader(p)
    assert reader.counter("c") == 0.0
    assert reader.counters["kitobs.telemetry.dropped.metrics.invalid_value"] == 17.0


def test_histogram_queue_bounded_and_drops_counted() -> None:
    p = statsd_provider(queue_size=100)
    h = p.histogram("lat", help="Latency.")
    for i in range(250):
        h.observe(float(i))
    lines = _lines(p, "lat")
    assert lines == [f"lat:{i}|ms" for i in range(100)]
    assert p.dropped_lines()["queue_full"] == 150


# ---- sampling


def test_sampling_is_real_and_scaled_back() -> None:
    """go-kit #778: sampled calls are really dropped client-side and sent with |@rate."""
    draws = itertools.cycle([0.1, 0.7, 0.3, 0.9])  # kept when < 0.5: every other call
    p = statsd_provider(sample_rate=0.5, random=lambda: next(draws))
    c = p.counter("hits", help="Hits.")
    for _ in range(100):
        c.add(3)
    assert _lines(p, "hits") == ["hits:150|c|@0.5"]  # 50 kept, the server scales to 300
    h = p.histogram("lat", help="Latency.", unit="seconds", sample_rate=0.25)
    draws2 = iter([0.1, 0.3, 0.2, 0.9])
    p2 = statsd_provider(random=lambda: next(draws2))
    h = p2.histogram("lat", help="Latency.", unit="seconds", sample_rate=0.25)
    for v in (0.001, 0.002, 0.003, 0.004):
        h.observe(v)
    assert _lines(p2, "lat") == ["lat:1|ms|@0.25", "lat:3|ms|@0.25"]


def test_sampled_counter_reads_back_close_to_truth() -> None:
    rng = random.Random(7)
    p = statsd_provider(flavor="dogstatsd", sample_rate=0.1, random=rng.random)
    c = p.counter("hits", help="Hits.")
    for _ in range(100_000):
        c.add()
    (line,) = _lines(p, "hits")
    kept, _, rest = line.partition(":")[2].partition("|")
    assert rest == "c|@0.1"
    assert 9_500 <= int(kept) <= 10_500  # about a tenth of the calls were kept


# ---- packing


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("size", [64, 100, 1432])
def test_pack_never_exceeds_size_nor_splits_lines(size: int, stream: bool) -> None:
    rng = random.Random(size)
    lines = [f"m{i}.{'x' * rng.randrange(1, 40)}:{i}|c" for i in range(500)]
    lines.append("gauge.neg:0|g\rgauge.neg:-5|g")
    packets, too_large = pack(lines, size, stream=stream)
    assert too_large == 0
    received: list[str] = []
    for packet, count in packets:
        assert len(packet) <= size
        text = packet.decode()
        if stream:
            assert text.endswith("\n")
            text = text[:-1]
        parts = text.split("\n")
        assert count == len(parts)
        received.extend(parts)
    assert received == [p for line in lines for p in line.split("\r")]
    # Packets are filled: each one would overflow with the next line added.
    for (packet, _), (nxt, _) in itertools.pairwise(packets):
        first = nxt.decode().split("\n")[0]
        if first.startswith("gauge.neg"):
            first = "gauge.neg:0|g\ngauge.neg:-5|g"  # the pair is one item
        assert len(packet) + len(first) + 1 > size


@pytest.mark.parametrize("where", [0, 1, 2])
def test_pack_drops_a_line_longer_than_a_packet(where: int) -> None:
    lines = ["a:1|c", "c:1|c"]
    lines.insert(where, "b" * 80 + ":1|c")
    packets, too_large = pack(lines, 64, stream=False)
    assert too_large == 1
    assert packets == [(b"a:1|c\nc:1|c", 2)]
    packets, too_large = pack(["x" * 70 + ":1|c", "y" * 70 + ":1|c"], 64, stream=True)
    assert (packets, too_large) == ([], 2)


def test_negative_gauge_pair_travels_in_one_packet() -> None:
    filler = [f"f{i}:1|c" for i in range(9)]  # 9 x 6 bytes + 8 newlines = 62
    pair = "g:0|g\rg:-5|g"
    packets, _ = pack([*filler, pair], 64, stream=False)
    assert packets[-1] == (b"g:0|g\ng:-5|g", 2)


# ---- threads


def test_threads_lose_no_update() -> None:
    p = statsd_provider()
    c = p.counter("hits", help="Hits.").labels()
    h = p.histogram("sizes", help="Sizes.", unit="bytes")
    reader = Reader(p)

    def work() -> None:
        for _ in range(100_000):
            c.add()
        for _ in range(1000):
            h.observe(1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    # Flush while they run: nothing may be lost or counted twice between flushes.
    while any(t.is_alive() for t in threads):
        reader.read()
    for t in threads:
        t.join()
    assert reader.counter("hits") == 800_000
    assert len(reader.observations("sizes")) == 8000


def test_locked_children_lose_no_update() -> None:
    """The variant used where the GIL gives no guarantee (free-threaded builds)."""
    draws = itertools.cycle([0.1, 0.9])
    p = statsd.Provider(None, lock_free=False, queue_size=10**6, random=lambda: next(draws))
    c = p.counter("hits", help="Hits.").labels()
    g = p.gauge("level", help="Level.")
    h = p.histogram("sizes", help="Sizes.", unit="seconds")
    sampled = p.counter("sampled", help="Sampled.", sample_rate=0.5)
    reader = Reader(p)

    def work() -> None:
        for _ in range(20_000):
            c.add()
            g.add(1)
            h.observe(2.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        reader.read()
    for t in threads:
        t.join()
    assert reader.counter("hits") == 160_000
    assert reader.gauge("level") == 160_000
    assert reader.observations("sizes") == [2.0] * 160_000
    g.set(-3)
    c.add("x")  # type: ignore[arg-type]
    for _ in range(10):
        sampled.add()
    assert reader.gauge("level") == -3
    assert reader.counter("sampled") == 10.0  # 5 kept, scaled back by 1/0.5
    assert p.dropped_lines()["invalid_value"] == 1


# ---- declaration and configuration


def test_redeclare_same_shape_returns_same_metric_other_shape_raises() -> None:
    p = statsd_provider()
    a = p.counter("jobs", help="Jobs.", labels=("q",))
    assert p.counter("jobs", help="Jobs.", labels=("q",)) is a
    with pytest.raises(DuplicateMetricError, match="jobs"):
        p.gauge("jobs", help="Jobs.", labels=("q",))


def test_binding_errors_name_metric_and_labels() -> None:
    p = statsd_provider()
    c = p.counter("jobs", help="Jobs.", labels=("queue",))
    with pytest.raises(ConfigError, match=r"jobs.*queue"):
        c.labels("a", "b")
    with pytest.raises(ConfigError, match=r"jobs.*unknown label"):
        c.with_labels(nope="x")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"flavor": "graphite"}, "metrics.statsd.flavor"),
        ({"etsy_labels": "keep"}, "metrics.statsd.etsy_labels"),
        ({"prefix": "a..b"}, "metrics.statsd.prefix"),
        ({"prefix": "a b"}, "metrics.statsd.prefix"),
        ({"packet_size": 10}, "metrics.statsd.packet_size"),
        ({"sample_rate": 0.0}, "metrics.statsd.sample_rate"),
        ({"sample_rate": 1.5}, "metrics.statsd.sample_rate"),
        ({"queue_size": 0}, "metrics.statsd.queue_size"),
        ({"dogstatsd_histogram": "x"}, "metrics.statsd.dogstatsd_histogram"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        statsd.Provider(None, **kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


@pytest.mark.parametrize(
    ("transport", "address"),
    [("udp", "localhost"), ("udp", "host:0"), ("tcp", ":8125"), ("unix", ""), ("quic", "a:1")],
)
def test_bad_address_raises_config_error(transport: str, address: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.statsd\.(address|transport)"):
        statsd.Provider(address, transport=transport)


def test_parse_address() -> None:
    assert parse_address("udp", "127.0.0.1:8125") == ("127.0.0.1", 8125)
    assert parse_address("tcp", "[::1]:9") == ("::1", 9)
    assert parse_address("unixgram", "unix:///run/s.sock") == "/run/s.sock"


def test_from_settings_uses_statsd_section() -> None:
    settings = config.load(
        env={
            "KITOBS_METRICS_STATSD_FLAVOR": "telegraf",
            "KITOBS_METRICS_STATSD_PREFIX": "svc",
            "KITOBS_SERVICE_LABELS": "env=dev",
        },
        path=None,
        search=False,
    )
    p = statsd.Provider.from_settings(settings)
    try:
        p.counter("jobs", help="Jobs.").add(4)
        out = io.BytesIO()
        p.write_to(out)
        assert "svc.jobs,env=dev:4|c" in out.getvalue().decode().splitlines()
    finally:
        p.close()


def test_self_metrics_present_from_start() -> None:
    p = statsd_provider(flavor="dogstatsd")
    names = {(ln.name, ln.tags) for ln in parse_lines(_raw(p))}
    for reason in statsd.DROP_REASONS:
        assert (
            "kitobs.telemetry.dropped",
            (("signal", "metrics"), ("reason", reason)),
        ) in names


def _raw(p: statsd.Provider) -> bytes:
    out = io.BytesIO()
    p.write_to(out)
    return out.getvalue()


def test_cardinality_guard_folds_into_overflow() -> None:
    p = statsd_provider(flavor="dogstatsd", max_label_sets=3)
    c = p.counter("users", help="Users.", labels=("id",))
    for i in range(10):
        c.labels(str(i)).add()
    lines = [ln for ln in parse_lines(_raw(p)) if ln.name == "users"]
    by_tag = {dict(ln.tags)["id"]: float(ln.value) for ln in lines}
    assert by_tag == {"0": 1.0, "1": 1.0, "2": 1.0, "_overflow": 7.0}
    folded = [ln for ln in parse_lines(_raw(p)) if ln.name == "kitobs.label.sets.folded"]
    assert folded == []  # already sent with the first read


def test_process_metrics_sent_on_flush() -> None:
    p = statsd_provider(process_metrics=True)
    first = {ln.name: ln for ln in parse_lines(_raw(p))}
    assert first["process.cpu"].type == "c"
    assert float(first["process.cpu"].value) > 0  # the CPU this test process has used so far
    assert first["process.resident.memory"].type == "g"
    assert float(first["process.resident.memory"].value) > 1_000_000
    second: dict[str, Line] = {}
    for _ in range(200):  # burn CPU until the clock ticks: the next flush sends only the change
        sum(i * i for i in range(50_000))
        second = {ln.name: ln for ln in parse_lines(_raw(p)) if ln.name == "process.cpu"}
        if second:
            break
    times = os.times()
    change = float(second["process.cpu"].value)
    cumulative = times.user + times.system
    assert change == pytest.approx(cumulative - float(first["process.cpu"].value), abs=0.05)
    assert change < cumulative / 2 or cumulative < 0.1
    off = statsd_provider()
    assert not [ln for ln in parse_lines(_raw(off)) if ln.name.startswith("process.")]
