"""bench_statsd: a statsd counter increment, network send included, against the peers.

Cases, each sending to its own real UDP socket on 127.0.0.1 (bound, drained between repeats):

- ``kitobs add``: a bound `kitobs.metrics.statsd` counter child ``add()``, plus its share of the
  flush that sends it (one `Provider.flush` per repeat, inside the timing);
- ``kitobs labels().add``: binding two label values (cached) and adding, flush included;
- ``kitobs observe``: a histogram child ``observe()`` in seconds, one ``|ms`` line per call, so
  every call pays for its bytes in packed datagrams (flush included);
- ``statsd incr``: the ``statsd`` package's ``StatsClient.incr`` (one datagram per call);
- ``statsd timing``: its ``timing``;
- ``dogstatsd buffered``: ``datadog.DogStatsd(disable_buffering=False)`` ``increment`` with its
  ``flush`` inside the timing.

Repeats are interleaved (every case once per round) in one process; the figure per case is the
median of the rounds, per operation. Run: ``python benchmarks/bench_statsd.py [--ops N]
[--rounds R]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable

import statsd as pystatsd
from datadog.dogstatsd import DogStatsd

from kitobs.metrics import statsd


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            n += len(sock.recv(65536))
        except BlockingIOError:
            return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="operations per case per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    ops = range(args.ops)

    socks: list[socket.socket] = []

    def addr() -> tuple[str, int]:
        sock = _receiver()
        socks.append(sock)
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    host, port = addr()
    kit = statsd.Provider(f"{host}:{port}", flush_interval=3600.0, queue_size=10**6)
    child = kit.counter("bench_hits", help="Hits.").labels()
    family = kit.counter("bench_requests", help="Requests.", labels=("method", "code"))
    hist = kit.histogram("bench_latency", help="Latency.", unit="seconds").labels()
    host2, port2 = addr()
    peer = pystatsd.StatsClient(host2, port2)
    host3, port3 = addr()
    dog = DogStatsd(
        host=host3,
        port=port3,
        disable_buffering=False,
        disable_telemetry=True,
        origin_detection_enabled=False,
        disable_background_sender=True,
    )

    def kit_add() -> None:
        add = child.add
        for _ in ops:
            add()
        kit.flush()

    def kit_bind_add() -> None:
        labels = family.labels
        for _ in ops:
            labels("GET", "200").add()
        kit.flush()

    def kit_observe() -> None:
        observe = hist.observe
        for _ in ops:
            observe(0.0123)
        kit.flush()

    def peer_incr() -> None:
        incr = peer.incr
        for _ in ops:
            incr("bench.hits")

    def peer_timing() -> None:
        timing = peer.timing
        for _ in ops:
            timing("bench.latency", 12.3)

    def dog_incr() -> None:
        increment = dog.increment
        for _ in ops:
            increment("bench.hits")
        dog.flush()

    cases: dict[str, Callable[[], None]] = {
        "kitobs add (bound)": kit_add,
        "kitobs labels(2).add": kit_bind_add,
        "kitobs observe (ms timer)": kit_observe,
        "statsd incr": peer_incr,
        "statsd timing": peer_timing,
        "dogstatsd buffered increment": dog_incr,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            begin = time.perf_counter()
            case()
            results[name].append((time.perf_counter() - begin) / args.ops * 1e9)
            for sock in socks:
                _drain(sock)
    kit.close()
    dog.close_socket()
    peer.close()
    for sock in socks:
        sock.close()

    base = statistics.median(results["statsd incr"])
    print(f"{args.ops} ops x {args.rounds} interleaved rounds; median ns per op")
    for name, values in results.items():
        med = statistics.median(values)
        lo, hi = min(values), max(values)
        print(f"  {name:32s} {med:9.0f} ns  ({lo:.0f}-{hi:.0f})  {med / base:5.2f}x statsd incr")
    dropped = {k: v for k, v in kit.dropped_lines().items() if v}
    print(f"kitobs dropped lines: {dropped or 'none'}")


if __name__ == "__main__":
    main()
