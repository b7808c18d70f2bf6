"""DNS SRV discovery against a real DNS server: dnslib's, in process, on a port-0 UDP socket."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import dns.asyncresolver
import pytest
from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from kitobs.errors import ConfigError
from kitobs.sd import Endpointer, Instance, WeightedRandom, dnssrv
from tests.support.resilience import recording

NAME = "_users._tcp.svc.test."


class _Table(BaseResolver):  # type: ignore[misc]
    """Answers SRV queries from a table the test changes; NXDOMAIN when ``failing``."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, int, str]] = []  # priority, weight, port, target
        self.failing = False
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        with self.lock:
            if self.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            qname = str(request.q.qname)
            if qname == NAME and request.q.qtype == QTYPE.SRV:
                for priority, weight, port, target in self.records:
                    reply.add_answer(
                        RR(qname, QTYPE.SRV, ttl=0, rdata=SRV(priority, weight, port, target))
                    )
                    if target.startswith("host1."):
                        reply.add_ar(RR(target, QTYPE.A, ttl=0, rdata=A("127.0.0.1")))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[_Table, int]]:
    # One server for the module: stopping one waits out its 0.5 s poll.
    table = _Table()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data")
    server = DNSServer(table, port=0, address="127.0.0.1", logger=quiet)
    server.start_thread()
    port = server.server.server_address[1]
    try:
        yield table, port
    finally:
        server.stop()
        server.server.server_close()  # without it: a ResourceWarning


@pytest.fixture
def dns_server(_server: tuple[_Table, int]) -> tuple[_Table, int]:
    table, _ = _server
    with table.lock:
        table.records, table.failing = [], False
    return _server


def _eventually(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_refresh_picks_up_changes_and_an_error_keeps_the_last_set(
    dns_server: tuple[_Table, int],
) -> None:
    table, port = dns_server
    table.records = [(10, 5, 8001, "host1.svc.test."), (20, 5, 8002, "host2.svc.test.")]
    rec = recording()
    instancer = dnssrv.Instancer(
        NAME, refresh=0.05, resolver=dnssrv.resolver(["127.0.0.1"], port=port), kit=rec.kit,
        service="users",
    )  # fmt: skip
    endpointer: Endpointer[Instance] = Endpointer(instancer, lambda i: (i, None))
    try:
        # The lowest priority group only; host1's address came in the additional section.
        assert endpointer.endpoints() == [Instance("127.0.0.1", 8001, priority=10, weight=5)]
        assert rec.metrics.value("kitobs_sd_instances", service="users") == 2.0
        with table.lock:
            table.records = [(10, 5, 8001, "host1.svc.test."), (10, 1, 8003, "host3.svc.test.")]
        _eventually(lambda: len(endpointer.endpoints()) == 2)
        assert {i.port for i in endpointer.endpoints()} == {8001, 8003}
        with table.lock:
            table.failing = True
        _eventually(lambda: endpointer.last_error is not None)
        assert {i.port for i in endpointer.endpoints()} == {8001, 8003}
        assert rec.metrics.value("kitobs_sd_events_total", service="users", outcome="error") >= 1
        with table.lock:
            table.failing = False
            table.records = [(0, 1, 8004, "host4.svc.test.")]
        _eventually(lambda: [i.port for i in endpointer.endpoints()] == [8004])
        assert endpointer.last_error is None
    finally:
        instancer.stop()
        endpointer.close()


def test_weights_spread_load(dns_server: tuple[_Table, int]) -> None:
    table, port = dns_server
    table.records = [(0, 90, 8001, "a.svc.test."), (0, 10, 8002, "b.svc.test.")]
    instancer = dnssrv.Instancer(
        NAME, refresh=60, resolver=dnssrv.resolver(["127.0.0.1"], port=port), kit=recording().kit
    )
    endpointer: Endpointer[int] = Endpointer(instancer, lambda i: (i.port, None))
    try:
        balancer = WeightedRandom(endpointer.weighted, seed=3)
        picks = [balancer.choose() for _ in range(2000)]
        assert 0.85 < picks.count(8001) / len(picks) < 0.95
    finally:
        instancer.stop()


def test_a_port_zero_record_fails_the_lookup(dns_server: tuple[_Table, int]) -> None:
    table, port = dns_server
    table.records = [(0, 1, 0, "a.svc.test.")]
    instancer = dnssrv.Instancer(
        NAME, refresh=60, resolver=dnssrv.resolver(["127.0.0.1"], port=port), kit=recording().kit
    )
    try:
        event = instancer.lookup()
        assert isinstance(event, ValueError)
        assert "port 0" in str(event)
    finally:
        instancer.stop()


def test_async_instancer_refreshes(dns_server: tuple[_Table, int]) -> None:
    table, port = dns_server
    table.records = [(0, 1, 8001, "host1.svc.test.")]

    async def main() -> None:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        instancer = await dnssrv.AsyncInstancer(
            NAME, refresh=0.05, resolver=resolver, kit=recording().kit
        ).start()
        seen: list[object] = []
        instancer.subscribe(seen.append)
        assert seen == [frozenset({Instance("127.0.0.1", 8001)})]
        with table.lock:
            table.records = [(0, 1, 8002, "host1.svc.test.")]
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        instancer.stop()
        assert seen[1] == frozenset({Instance("127.0.0.1", 8002)})

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="refresh"):
        dnssrv.Instancer(NAME, refresh=0)
    with pytest.raises(ConfigError, match="empty"):
        dnssrv.Instancer("")


def test_from_config_uses_the_sd_settings(dns_server: tuple[_Table, int]) -> None:
    table, port = dns_server
    table.records = [(0, 1, 8001, "host1.svc.test.")]
    rec = recording(
        **{"sd.dns_nameservers": ["127.0.0.1"], "sd.dns_port": port, "sd.dns_refresh": 60}
    )
    instancer = dnssrv.from_config(NAME, rec.kit)
    try:
        assert instancer.lookup() == frozenset({Instance("127.0.0.1", 8001)})
    finally:
        instancer.stop()
