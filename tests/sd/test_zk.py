"""ZooKeeper discovery against the real ZooKeeper of scripts/services."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from kitobs.errors import ConfigError
from kitobs.sd import Endpointer, Instance, zk
from tests.support.resilience import recording
from tests.support.servers import require_env


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def hosts() -> str:
    return require_env("KITOBSTEST_ZK_HOSTS")


@pytest.fixture
def client(hosts: str) -> Iterator[KazooClient]:
    c = zk.client(hosts, session_timeout=2.0)
    try:
        yield c
    finally:
        c.stop()
        c.close()


def _path() -> str:
    return f"/kitobs-test/{uuid.uuid4().hex}"


def _expire(hosts: str, victim: KazooClient) -> None:
    # A second client on the same session, closed: the server expires the victim's session
    # (how kazoo's own tests make a session LOST).
    session_id, password = victim.client_id
    twin = KazooClient(hosts=hosts, client_id=(session_id, password))
    twin.start(timeout=10)
    twin.stop()
    twin.close()


def test_instancer_watches_and_the_registrar_survives_a_lost_session(
    hosts: str, client: KazooClient
) -> None:
    path = _path()
    rec = recording()
    registrar_client = zk.client(hosts, session_timeout=2.0)
    instancer = zk.Instancer(client, path, service="users", kit=rec.kit)
    endpointer: Endpointer[Instance] = Endpointer(instancer, lambda i: (i, None))
    registrar = zk.Registrar(registrar_client, path, "127.0.0.1:9001", kit=rec.kit)
    other = zk.Registrar(client, path, "127.0.0.1:9002", kit=rec.kit)
    try:
        assert endpointer.endpoints() == []
        registrar.register()
        other.register()
        _eventually(lambda: len(endpointer.endpoints()) == 2)
        first_node = registrar.node
        _expire(hosts, registrar_client)
        # The old ephemeral went with the session; a new one replaces it.
        _eventually(lambda: registrar.node != first_node and registrar.node is not None)
        assert client.exists(first_node) is None  # type: ignore[arg-type]
        _eventually(lambda: len(endpointer.endpoints()) == 2)
        assert rec.metrics.value("kitobs_sd_instances", service="users") == 2.0
        # Deregistering removes this registrar's node only.
        other.deregister()
        _eventually(lambda: endpointer.endpoints() == [Instance("127.0.0.1", 9001)])
        assert client.get_children(path) == [registrar.node.rsplit("/", 1)[1]]  # type: ignore[union-attr]
    finally:
        registrar.deregister()
        other.deregister()
        instancer.stop()
        registrar_client.stop()
        registrar_client.close()


def test_instancer_publishes_an_error_on_a_lost_session_and_a_fresh_set_after(
    hosts: str, client: KazooClient
) -> None:
    path = _path()
    client.ensure_path(path)
    client.create(path + "/a", b"127.0.0.1:9001")
    client.create(path + "/junk", b"not an instance")
    watcher = zk.client(hosts, session_timeout=2.0)
    seen: list[Any] = []
    instancer = zk.Instancer(watcher, path, kit=recording().kit)
    instancer.subscribe(seen.append)
    try:
        assert seen == [frozenset({Instance("127.0.0.1", 9001)})]
        _expire(hosts, watcher)
        _eventually(lambda: any(isinstance(e, Exception) for e in seen))
        _eventually(lambda: seen[-1] == frozenset({Instance("127.0.0.1", 9001)}))
        client.create(path + "/b", b"127.0.0.1:9002")  # the watch was re-armed
        _eventually(lambda: len(seen[-1]) == 2)
    finally:
        instancer.stop()
        watcher.stop()
        watcher.close()


def test_digest_credentials_protect_the_registered_node(hosts: str, client: KazooClient) -> None:
    path = _path()
    owner = zk.client(hosts, username="svc", password="secret-pass", session_timeout=2.0)
    registrar = zk.Registrar(owner, path, "127.0.0.1:9001", kit=recording().kit)
    try:
        registrar.register()
        assert registrar.node is not None
        data, _ = client.get(registrar.node)  # everyone reads
        assert data == b"127.0.0.1:9001"
        with pytest.raises(NoAuthError):
            client.set(registrar.node, b"127.0.0.1:6666")  # only the owner writes
    finally:
        registrar.deregister()
        owner.stop()
        owner.close()


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="together"):
        zk.client("127.0.0.1:1", username="u", start=False)
    with pytest.raises(ConfigError, match="at least 1 s"):
        zk.client("127.0.0.1:1", session_timeout=0.5, start=False)
    with pytest.raises(ConfigError, match="must start with"):
        zk.Registrar(zk.client("127.0.0.1:1", start=False), "svc", "x")


def test_from_config_uses_the_sd_settings(hosts: str) -> None:
    rec = recording(**{"sd.zookeeper_hosts": [hosts], "sd.zookeeper_session_timeout": 2.0})
    c = zk.from_config(rec.kit)
    try:
        assert c.connected
    finally:
        c.stop()
        c.close()
    with pytest.raises(ConfigError, match="zookeeper_hosts"):
        zk.from_config(recording().kit)
