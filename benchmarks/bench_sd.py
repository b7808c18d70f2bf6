"""Service discovery on the call path: what Endpointer + RoundRobin + retry add to an HTTP call.

Run: ``python benchmarks/bench_sd.py [--quick]``. A loopback HTTP server (port 0, keep-alive) is
called through a `kitobs.transport.httpclient.ClientEndpoint` on a Kit with the in-memory
metrics provider, two ways, in interleaved repeats:

- bare: the instrumented client endpoint called directly (what a user without discovery does);
- sd: the same kind of endpoint built by an `Endpointer` over a `StaticInstancer`, picked by
  `RoundRobin` inside `retry` (3 attempts, 1 s; its span per attempt and its metrics included).

Both wall-clock medians are printed with their difference, which is within the noise of a
socket round trip. So the added cost is also timed on its own: the same sd path around a
no-op endpoint, less the no-op endpoint called directly (thread CPU time, where the HTTP path
has no server thread to share the CPU with). The goal: that added cost at most 5% of the bare
HTTP call.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kitobs.config import load
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import memory
from kitobs.sd import Endpointer, Instance, RoundRobin, StaticInstancer, retry
from kitobs.tracing import Tracer
from kitobs.transport.httpclient import ClientEndpoint


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the call is one round trip, not a connect
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def noop(request: object) -> object:
    return request


def timed(stmt: str, ns: dict[str, object], number: int, timer: Any) -> float:
    return timeit.Timer(stmt, globals=ns, timer=timer).timeit(number) / number


def main() -> None:
    quick = "--quick" in sys.argv
    http_number, cpu_number, repeats = (50, 2000, 3) if quick else (1000, 100_000, 7)
    kit = Kit(
        load(path=None, env={}, search=False),
        logger=nop(),
        metrics=memory.Provider(),
        tracer=Tracer(),
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/"

    bare = ClientEndpoint("GET", url, kit=kit)
    instancer = StaticInstancer([Instance("127.0.0.1", port)], service="bench", kit=kit)

    def factory(instance: Instance) -> tuple[Any, Any]:
        endpoint = ClientEndpoint("GET", f"http://{instance.address}:{instance.port}/", kit=kit)
        return endpoint, endpoint.close

    endpointer: Endpointer[Any] = Endpointer(instancer, factory, kit=kit)
    sd = retry(RoundRobin(endpointer.endpoints), 3, 1.0, service="bench", kit=kit)
    nop_instancer = StaticInstancer([Instance("127.0.0.1", 1)], service="bench-nop", kit=kit)
    nop_endpointer: Endpointer[Any] = Endpointer(nop_instancer, lambda i: (noop, None), kit=kit)
    sd_nop = retry(RoundRobin(nop_endpointer.endpoints), 3, 1.0, service="bench-nop", kit=kit)
    ns: dict[str, object] = {"bare": bare, "sd": sd, "noop": noop, "sd_nop": sd_nop}
    bare(None), sd(None)  # connections made, series declared

    b: list[float] = []
    s: list[float] = []
    floor: list[float] = []
    layer: list[float] = []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        b.append(timed("bare(None)", ns, http_number, time.perf_counter))
        s.append(timed("sd(None)", ns, http_number, time.perf_counter))
        floor.append(timed("noop(None)", ns, cpu_number, time.thread_time))
        layer.append(timed("sd_nop(None)", ns, cpu_number, time.thread_time))
    mb, ms = statistics.median(b), statistics.median(s)
    added = max(statistics.median(layer) - statistics.median(floor), 1e-12)
    ratio = added / mb
    print(f"median of {repeats} repeats; HTTP {http_number} calls each, layer {cpu_number}")
    print(f"{'bare instrumented call':<28} {mb * 1e6:9.2f} us/call")
    print(
        f"{'through sd + retry':<28} {ms * 1e6:9.2f} us/call  (difference {(ms - mb) * 1e6:+.2f} us)"
    )
    print(f"{'sd + retry layer alone':<28} {added * 1e6:9.2f} us/call")
    verdict = "ok" if ratio <= 0.05 else "MISSED"
    print(f"ratio: sd layer / bare call = {ratio:.4f} (goal <= 0.050) {verdict}")
    bare.close()
    endpointer.close()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
