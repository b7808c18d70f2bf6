"""Discovery under load: four real HTTP backends registered in etcd or ZooKeeper, a client
calling them through Endpointer + RoundRobin + retry + a Breaker per endpoint, while one backend
dies and another deregisters."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kitobs.circuitbreaker import Breaker
from kitobs.sd import Endpointer, Instance, RetryError, RoundRobin, etcd, retry, zk
from kitobs.transport.httpclient import ClientEndpoint
from tests.support.resilience import recording
from tests.support.servers import require_env


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client closing its connection mid-answer (its endpoint closed) is expected


class _Backend:
    """A loopback HTTP server on port 0 answering its own port; counts the requests it served."""

    def __init__(self) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with backend.lock:
                    backend.served += 1
                body = json.dumps({"port": backend.port}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.served = 0
        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class _Registry:
    """One backend's registration, in etcd or ZooKeeper, each backend with its own client (as
    separate processes have), and the client's watching side."""

    def __init__(self, kind: str, rec: Any) -> None:
        self.kind = kind
        self.rec = rec
        self.path = f"/kitobs-load/{uuid.uuid4().hex}"
        self.url = require_env("KITOBSTEST_ETCD_URL" if kind == "etcd" else "KITOBSTEST_ZK_HOSTS")
        self.clients: list[Any] = []

    def registrar(self, port: int) -> Any:
        if self.kind == "etcd":
            c: Any = etcd.Client(self.url)
            self.clients.append(c)
            return etcd.Registrar(
                c,
                f"{self.path}/{port}",
                f"127.0.0.1:{port}",
                ttl=2,
                heartbeat=0.5,
                kit=self.rec.kit,
            )
        c = zk.client(self.url, session_timeout=2.0)
        self.clients.append(c)
        return zk.Registrar(c, self.path, f"127.0.0.1:{port}", kit=self.rec.kit)

    def crash(self, index: int) -> None:
        # The backend's process dies: its etcd keep-alive stops (the lease runs out in 2 s), its
        # ZooKeeper session ends (the ephemeral node goes).
        c = self.clients[index]
        if self.kind == "etcd":
            c.close()
        else:
            c.stop()

    def instancer(self) -> Any:
        if self.kind == "etcd":
            c: Any = etcd.Client(self.url)
            self.clients.append(c)
            return etcd.Instancer(c, self.path + "/", service="users", kit=self.rec.kit)
        c = zk.client(self.url, session_timeout=2.0)
        self.clients.append(c)
        return zk.Instancer(c, self.path, service="users", kit=self.rec.kit)

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                if self.kind == "etcd":
                    c.close()
                else:
                    c.stop()
                    c.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_traffic_moves_off_a_dead_and_a_deregistered_backend_without_failed_calls(
    kind: str,
) -> None:
    rec = recording()
    registry = _Registry(kind, rec)
    backends = [_Backend() for _ in range(4)]
    registrars = [registry.registrar(b.port) for b in backends]
    for registrar in registrars:
        registrar.register()
    instancer = registry.instancer()

    def factory(instance: Instance) -> tuple[Any, Callable[[], None]]:
        endpoint = ClientEndpoint(
            "GET", f"http://{instance.address}:{instance.port}/", kit=rec.kit, timeout=0.5
        )
        breaker = Breaker(
            f"users-{instance.port}", consecutive_failures=2, open_timeout=30.0, kit=rec.kit
        )
        return breaker(endpoint), endpoint.close

    endpointer: Endpointer[Any] = Endpointer(instancer, factory, kit=rec.kit)
    call = retry(
        RoundRobin(endpointer.endpoints), 3, 2.0, service="users", kit=rec.kit,
        instance_of=endpointer.instance_of,
    )  # fmt: skip
    _eventually(lambda: len(endpointer.endpoints()) == 4)

    stop = threading.Event()
    failures: list[BaseException] = []
    answered: list[Counter[int]] = [Counter(), Counter(), Counter()]  # per phase
    phase = [0]

    def load() -> None:
        while not stop.is_set():
            try:
                answer = call(None)
            except RetryError as error:
                failures.append(error)
                continue
            answered[phase[0]][answer["port"]] += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    dead, leaving = backends[0], backends[1]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        # Phase 1: one backend dies without deregistering (its lease runs out, as when a
        # process is killed), another deregisters cleanly.
        phase[0] = 1
        dead.kill()
        registry.crash(0)
        registrars[1].deregister()
        _eventually(lambda: len(endpointer.endpoints()) == 2)
        assert rec.metrics.value("kitobs_sd_instances", service="users") == 2.0
        time.sleep(0.2)  # calls that picked from the older set finish
        # Phase 2: the two survivors carry all of the traffic.
        leaving_before = leaving.served
        phase[0] = 2
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    try:
        assert failures == []  # every call succeeded within its retry budget
        assert set(answered[0]) == {b.port for b in backends}
        survivors = {backends[2].port, backends[3].port}
        assert set(answered[2]) == survivors
        assert all(answered[2][p] > 0 for p in survivors)
        assert leaving.served == leaving_before  # nothing more went to the deregistered one
        # The dead backend was hit (and its breaker opened): retries covered it.
        m = rec.metrics
        assert m.value("kitobs_lb_attempts_total", service="users", outcome="error") >= 1
        assert m.value("kitobs_breaker_state", breaker=f"users-{dead.port}") == 2.0
    finally:
        endpointer.close()
        instancer.stop()
        for registrar in registrars:
            registrar.deregister()
        for backend in backends[1:]:
            backend.kill()
        registry.close()
