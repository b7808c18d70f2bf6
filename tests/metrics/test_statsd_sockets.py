"""statsd backend over real sockets the test owns: UDP, TCP, Unix datagram and stream.

Checks the bytes on the wire (the telegraf grammar, DogStatsD against the ``datadog`` package's
own client), packet sizes, the never-block promise, fork() and the flush at interpreter exit.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from datadog.dogstatsd import DogStatsd

from kitobs.metrics import statsd
from tests.metrics.harness_statsd import parse_lines

_WAIT = 10.0  # generous upper bound on any receive; never asserted on


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(_WAIT)
    yield sock
    sock.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="kst") as path:
        yield path


def _addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _recv_all(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    """Every datagram until none arrives for *quiet* seconds (the first may take longer)."""
    packets = [sock.recv(65536)]
    sock.settimeout(quiet)
    try:
        while True:
            packets.append(sock.recv(65536))
    except TimeoutError:
        pass
    finally:
        sock.settimeout(_WAIT)
    return packets


def _user_lines(data: bytes) -> list[str]:
    return [ln for ln in data.decode().split("\n") if ln and "kitobs." not in ln]


# ---- UDP


def test_udp_packets_are_bounded_newline_joined_and_whole(udp: socket.socket) -> None:
    p = statsd.Provider(_addr(udp), packet_size=200, flush_interval=3600)
    try:
        h = p.histogram("sizes", help="Sizes.", unit="bytes", labels=("shard",))
        for i in range(1000):
            h.labels(str(i % 7)).observe(float(i))
        p.flush()
        packets = _recv_all(udp)
    finally:
        p.close()
    assert len(packets) > 1
    values = []
    for packet in packets:
        assert len(packet) <= 200
        assert not packet.endswith(b"\n")  # datagrams: newline-joined, no trailing newline
        for line in parse_lines(packet):  # fails on any partial line
            if line.name.startswith("sizes."):
                values.append(float(line.value))
    assert sorted(values) == [float(i) for i in range(1000)]


def test_udp_background_flush_on_interval(udp: socket.socket) -> None:
    p = statsd.Provider(_addr(udp), flush_interval=0.05, prefix="bg")
    try:
        p.counter("ticks", help="Ticks.").add(4)
        seen: list[str] = []
        while not any(ln.startswith("bg.ticks:") for ln in seen):
            seen += udp.recv(65536).decode().split("\n")  # times out if never flushed
    finally:
        p.close()
    assert "bg.ticks:4|c" in seen


def test_host_name_resolved_by_the_flusher(udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    p = statsd.Provider(f"localhost:{port}", flush_interval=0.05, resolve_interval=0.1)
    try:
        p.counter("named", help="Named.").add(2)
        seen: list[str] = []
        while "named:2|c" not in seen:
            seen += udp.recv(65536).decode().split("\n")
    finally:
        p.close()


def test_host_name_re_resolved_periodically(udp: socket.socket) -> None:
    """The address moves (e.g. a new container IP): later lines go to the new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as moved:
        moved.bind(("127.0.0.1", 0))
        moved.settimeout(_WAIT)
        ports = {"now": udp.getsockname()[1]}
        lookups: list[str] = []

        def resolver(host: str, port: int, type: int = 0) -> list[tuple[Any, ...]]:
            # The real resolver, asked for "localhost" on whichever port is current.
            lookups.append(host)
            return socket.getaddrinfo("127.0.0.1", ports["now"], socket.AF_INET, type)

        p = statsd.Provider(
            "statsd-svc:8125", flush_interval=0.05, resolve_interval=0.05, resolver=resolver
        )
        try:
            c = p.counter("moving", help="Moving.")
            c.add(1)
            seen: list[str] = []
            while "moving:1|c" not in seen:
                seen += udp.recv(65536).decode().split("\n")
            ports["now"] = moved.getsockname()[1]
            n = len(lookups)
            deadline = time.monotonic() + _WAIT
            while len(lookups) < n + 2:  # a lookup after the move has been made and used
                if time.monotonic() > deadline:
                    raise AssertionError("the flusher stopped looking the host up")
                time.sleep(0.01)
            c.add(2)
            seen = []
            while "moving:2|c" not in seen:
                seen += moved.recv(65536).decode().split("\n")
        finally:
            p.close()
    assert set(lookups) == {"statsd-svc"}


def test_close_flushes(udp: socket.socket) -> None:
    p = statsd.Provider(_addr(udp), flush_interval=3600)
    p.gauge("last", help="Last.").set(9)
    p.close()
    p.close()  # idempotent
    lines = [ln for packet in _recv_all(udp) for ln in packet.decode().split("\n")]
    assert "last:9|g" in lines


def test_flush_at_interpreter_exit(udp: socket.socket) -> None:
    script = textwrap.dedent(
        f"""
        from kitobs.metrics import statsd
        p = statsd.Provider({_addr(udp)!r}, flush_interval=3600)
        p.counter("at_exit", help="At exit.").add(7)
        # no close(): the atexit hook must flush
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=os.getcwd())
    lines = [ln for packet in _recv_all(udp) for ln in packet.decode().split("\n")]
    assert "at.exit:7|c" in lines


# ---- DogStatsD against the datadog package


def test_dogstatsd_lines_match_the_datadog_client(
    udp: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = udp.getsockname()[:2]
    for name in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DATADOG_TAGS", "DD_ENTITY_ID"):
        monkeypatch.delenv(name, raising=False)
    # Both clients sample with their own random source; make both keep every call.
    monkeypatch.setattr("datadog.dogstatsd.base.random", lambda: 0.0)
    ref = DogStatsd(
        host=host,
        port=port,
        disable_telemetry=True,
        origin_detection_enabled=False,
        disable_buffering=True,
    )
    try:
        ref.increment("shop.jobs", 3, tags=["queue:fast", "route:/a/b"])
        ref.increment("shop.hits", 5, sample_rate=0.5, tags=["queue:x_y"])
        ref.gauge("shop.depth", 7, tags=["queue:fast"])
        ref.histogram("shop.size", 0.0315, tags=["queue:fast"])
        ref.distribution("shop.payload", 12.5)
        ref.timing("shop.latency", 31.5, tags=["queue:café_1"])
        # The reference ends each datagram with a newline; the line is what is compared.
        want = [udp.recv(65536).decode().removesuffix("\n") for _ in range(6)]
    finally:
        ref.close_socket()

    lines: list[str] = []
    for hist_type in ("h", "d"):
        # random=0.0: every sampled call is kept, like the patched reference client.
        p = statsd.Provider(
            None,
            flavor="dogstatsd",
            prefix="shop",
            dogstatsd_histogram=hist_type,
            random=lambda: 0.0,
        )
        p.counter("jobs", help="J.", labels=("queue", "route")).labels("fast", "/a/b").add(3)
        p.counter("hits", help="H.", labels=("queue",), sample_rate=0.5).labels("x y").add(5)
        p.gauge("depth", help="D.", labels=("queue",)).labels("fast").set(7)
        size = p.histogram("size", help="S.", unit="bytes", labels=("queue",))
        size.labels("fast").observe(0.0315)
        p.histogram("payload", help="P.", unit="bytes").observe(12.5)
        latency = p.histogram("latency", help="L.", unit="seconds", labels=("queue",))
        latency.labels("café 1").observe(0.0315)
        out = io.BytesIO()
        p.write_to(out)
        lines += _user_lines(out.getvalue())
    ours = set(lines)
    assert want[0] in ours  # counter with tags (a "/" kept, as datadog keeps it)
    assert want[1] in ours  # sampled counter: |@0.5 before the tags, tag value sanitised
    assert want[2] in ours  # gauge
    assert want[3] in ours  # histogram |h (the h flavour of the provider)
    assert want[4] in ours  # distribution |d (the d flavour)
    assert want[5] in ours  # timer, unicode tag value kept like datadog keeps it


# ---- TCP and Unix sockets, byte for byte (telegraf grammar)


def _telegraf_provider(address: str, transport: str) -> statsd.Provider:
    p = statsd.Provider(address, transport=transport, flavor="telegraf", prefix="tg")
    p.counter("reqs", help="R.", labels=("method", "code")).labels("GET", "200").add(3)
    p.gauge("temp", help="T.", labels=("room",)).labels("a b").set(-2.5)
    p.histogram("lat", help="L.", unit="seconds").observe(0.25)
    return p


# <measurement>[,<tag>=<value>...]:<value>|<type>[|@<rate>], per telegraf's statsd input docs.
_TELEGRAF_WANT = [
    "tg.reqs,method=GET,code=200:3|c",
    "tg.temp,room=a_b:0|g",
    "tg.temp,room=a_b:-2.5|g",
    "tg.lat:250|ms",
]


def _accept_all(listener: socket.socket) -> bytes:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(_WAIT)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_telegraf_byte_for_byte() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(_WAIT)
        p = _telegraf_provider(_addr(listener), "tcp")
        p.close()
        data = _accept_all(listener)
    assert data.endswith(b"\n")  # every stream write ends a line
    assert _user_lines(data) == _TELEGRAF_WANT


def test_unix_stream_telegraf_byte_for_byte(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        listener.settimeout(_WAIT)
        p = _telegraf_provider(path, "unix")
        p.close()
        data = _accept_all(listener)
    assert data.endswith(b"\n")
    assert _user_lines(data) == _TELEGRAF_WANT


def test_unixgram_telegraf_byte_for_byte(short_dir: str) -> None:
    path = os.path.join(short_dir, "d.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(_WAIT)
        p = _telegraf_provider(f"unix://{path}", "unixgram")
        p.close()
        data = b"\n".join(_recv_all(sock))
    assert _user_lines(data) == _TELEGRAF_WANT


# ---- never block


def _hammer(p: statsd.Provider, pad: int = 1) -> int:
    """100,000 adds and observations with a flush every 1,000; returns observations made.

    *pad* is the length of a label value, to make each line (and the bytes sent) longer.
    """
    c = p.counter("hammer_hits", help="Hits.").labels()
    h = p.histogram("hammer_sizes", help="Sizes.", unit="bytes", labels=("pad",)).labels("x" * pad)
    for i in range(100_000):
        c.add()
        h.observe(float(i))
        if i % 1000 == 999:
            p.flush()
    return 100_000


def test_tcp_peer_that_never_reads_does_not_block() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(_WAIT)
        p = statsd.Provider(_addr(listener), transport="tcp", flush_interval=3600, queue_size=2000)
        p.flush()  # connects (non-blocking)
        conn, _ = listener.accept()  # accepted, never read while the provider sends
        with conn:
            # ~25 MB of lines: more than the kernel buffers of both ends hold.
            sent = _hammer(p, pad=220)  # returns: neither the adds nor the flushes block
            p.close()  # bounded by close_timeout, then what is left is dropped
            dropped = p.dropped_lines()
            conn.settimeout(_WAIT)
            data = b"".join(iter(lambda: conn.recv(1 << 20), b""))
    assert sum(dropped.values()) > 0
    assert dropped["queue_full"] > 0
    # close() may cut the packet being written: its unfinished last line is counted as dropped,
    # and statsd's TCP server discards such a fragment too.
    data = data[: data.rfind(b"\n") + 1]
    delivered = [ln for ln in parse_lines(data) if ln.name.startswith("hammer.sizes.")]
    lost = sent - len(delivered)
    # Every observation arrived or was counted as dropped (self-metric lines may be among the
    # dropped too: at most a handful per flush).
    assert lost <= sum(dropped.values()) <= lost + 8 * 110
    counted = sum(float(ln.value) for ln in parse_lines(data) if ln.name == "hammer.hits")
    assert counted <= sent


def test_refused_tcp_address_does_not_block_and_counts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        address = _addr(closed)
    # Nothing listens there now: every connect is refused.
    events: list[tuple[object, ...]] = []

    class Capture:
        def log(self, *keyvals: object) -> None:
            events.append(keyvals)

    p = statsd.Provider(
        address,
        transport="tcp",
        flush_interval=0.001,  # also the reconnect interval: many refused attempts
        queue_size=500,
        logger=Capture(),
        close_timeout=0.2,
    )
    sent = _hammer(p)
    p.close()
    dropped = p.dropped_lines()
    assert sum(dropped.values()) >= sent  # nothing was delivered, everything is counted
    # Reported to the logger, but once, not on every one of the 100 failed flushes.
    assert len(events) == 1
    assert "ConnectionRefused" in str(events[0]) or "refused" in str(events[0]).lower()


def test_missing_unix_socket_does_not_block_and_counts(short_dir: str) -> None:
    path = os.path.join(short_dir, "nobody.sock")
    for transport in ("unix", "unixgram"):
        p = statsd.Provider(path, transport=transport, flush_interval=3600, queue_size=500)
        sent = _hammer(p)
        p.close()
        assert sum(p.dropped_lines().values()) >= sent


def test_udp_to_dead_port_does_not_raise() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        address = _addr(gone)
    p = statsd.Provider(address, flush_interval=3600)
    sent = _hammer(p)
    p.close()
    # UDP cannot know: the lines left, nothing was queued for ever.
    assert sent == 100_000
    assert p.dropped_lines()["closed"] == 0


# ---- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_child_gets_fresh_sender_and_no_parent_buffer(udp: socket.socket) -> None:
    p = statsd.Provider(_addr(udp), flush_interval=3600, prefix="fk")
    try:
        c = p.counter("jobs", help="Jobs.")
        p.flush()  # the parent's socket exists before the fork
        parent_port = _recv_from(udp)[1]
        c.add(5)  # unflushed in the parent at fork time
        with warnings.catch_warnings():
            # 3.12+ warns about fork() in a process with threads (the flusher); that is the
            # situation under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                c.add(3)
                p.flush()
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        child_data, child_port = _recv_from(udp)
        p.flush()
        parent_data, parent_port_again = _recv_from(udp)
    finally:
        p.close()
    assert _user_lines(child_data) == ["fk.jobs:3|c"]  # not 8: the parent's 5 stayed behind
    assert child_port != parent_port  # a fresh socket in the child
    assert _user_lines(parent_data) == ["fk.jobs:5|c"]
    assert parent_port_again == parent_port


def _recv_from(sock: socket.socket) -> tuple[bytes, int]:
    data, addr = sock.recvfrom(65536)
    return data, int(addr[1])
