"""etcd discovery against real etcd servers: the shared one of scripts/services, and a private
one started here for the restart test."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kitobs.errors import ConfigError
from kitobs.sd import Endpointer, Instance, etcd
from tests.support.resilience import recording
from tests.support.servers import free_port, require_env, servers_required


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def client() -> Iterator[etcd.Client]:
    c = etcd.Client(require_env("KITOBSTEST_ETCD_URL"))
    try:
        yield c
    finally:
        c.close()


def _prefix() -> str:
    return f"/kitobs-test/{uuid.uuid4().hex}/"


def test_instancer_lists_and_watches_and_the_registrar_comes_and_goes(
    client: etcd.Client,
) -> None:
    prefix = _prefix()
    client.put(prefix + "a", "127.0.0.1:9001")
    client.put(prefix + "junk", "not an instance")
    rec = recording()
    instancer = etcd.Instancer(client, prefix, service="users", kit=rec.kit)
    endpointer: Endpointer[Instance] = Endpointer(instancer, lambda i: (i, None))
    registrar = etcd.Registrar(client, prefix + "b", "127.0.0.1:9002", ttl=2, kit=rec.kit)
    try:
        assert endpointer.endpoints() == [Instance("127.0.0.1", 9001)]
        registrar.register()
        _eventually(lambda: len(endpointer.endpoints()) == 2)
        time.sleep(2.5)  # past the lease's TTL: the keep-alive held it
        assert len(endpointer.endpoints()) == 2
        assert rec.metrics.value("kitobs_sd_instances", service="users") == 2.0
        # The lease lost (as after a long outage): the registrar announces itself again.
        assert registrar.lease is not None
        client.revoke(registrar.lease)
        _eventually(lambda: len(client.get_prefix(prefix + "b")[0]) == 1)
        registrar.deregister()
        _eventually(lambda: endpointer.endpoints() == [Instance("127.0.0.1", 9001)])
        client.delete(prefix + "a")
        _eventually(lambda: endpointer.endpoints() == [])
    finally:
        registrar.deregister()
        instancer.stop()


def _start_etcd(data: Path, port: int, peer: int) -> subprocess.Popen[bytes]:
    url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    process = subprocess.Popen(
        [
            "etcd", "--name", "t", "--data-dir", str(data),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"t={peer_url}", "--log-level", "error", "--logger", "zap",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probe = etcd.Client(url, timeout=0.5)
    try:
        _eventually(lambda: _healthy(probe))
    finally:
        probe.close()
    return process


def _healthy(probe: etcd.Client) -> bool:
    try:
        probe.get_prefix("/")
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_instancer_recovers_from_a_server_restart(tmp_path: Path) -> None:
    _require_etcd_binary()
    port, peer = free_port(), free_port()
    server = _start_etcd(tmp_path / "etcd", port, peer)
    client = etcd.Client(f"http://127.0.0.1:{port}", timeout=0.5)
    rec = recording()
    instancer = etcd.Instancer(client, "/svc/", service="users", backoff=0.05, kit=rec.kit)
    seen: list[object] = []
    instancer.subscribe(seen.append)
    try:
        client.put("/svc/a", "127.0.0.1:9001")
        _eventually(lambda: seen[-1] == frozenset({Instance("127.0.0.1", 9001)}))
        server.terminate()
        server.wait(10)
        _eventually(lambda: isinstance(seen[-1], Exception))
        server = _start_etcd(tmp_path / "etcd", port, peer)
        _eventually(lambda: seen[-1] == frozenset({Instance("127.0.0.1", 9001)}))
        client.put("/svc/b", "127.0.0.1:9002")  # the watch is back, not only the list
        _eventually(lambda: len(seen[-1]) == 2)  # type: ignore[arg-type]
        warned = [r["msg"] for r in rec.logs if r.get("level") == "warn"]
        assert "service discovery lost its server, keeping the last instances" in warned
    finally:
        instancer.stop()
        client.close()
        server.terminate()
        server.wait(10)


def test_client_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        etcd.Client("127.0.0.1:2379")
    with pytest.raises(ConfigError, match="together"):
        etcd.Client("http://127.0.0.1:2379", username="u")
    with pytest.raises(ConfigError, match="certificate"):
        etcd.Client("https://127.0.0.1:2379", key="k.pem")
    with pytest.raises(ConfigError, match="at least 2"):
        etcd.Registrar(etcd.Client("http://127.0.0.1:1"), "/k", "v", ttl=1)


def test_credentials_are_sent(client: etcd.Client) -> None:
    # etcd without auth enabled refuses authenticate: the error names the credentials.
    url = require_env("KITOBSTEST_ETCD_URL")
    authed = etcd.Client(url, username="root", password="secret")
    try:
        with pytest.raises(etcd.EtcdError, match="credentials"):
            authed.get_prefix("/")
    finally:
        authed.close()


def test_from_config_uses_the_sd_settings() -> None:
    rec = recording(**{"sd.etcd_urls": ["http://127.0.0.1:1", "http://127.0.0.1:2"]})
    c = etcd.from_config(rec.kit)
    try:
        assert c.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    finally:
        c.close()
    with pytest.raises(ConfigError, match="etcd_urls"):
        etcd.from_config(recording().kit)


def _require_etcd_binary() -> None:
    if shutil.which("etcd") is None:
        reason = "etcd is not installed: scripts/services installs it"
        if servers_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.mark.slow
def test_user_and_password_against_an_etcd_with_auth_enabled(tmp_path: Path) -> None:
    _require_etcd_binary()
    port, peer = free_port(), free_port()
    server = _start_etcd(tmp_path / "etcd", port, peer)
    url = f"http://127.0.0.1:{port}"
    admin = etcd.Client(url)
    try:
        # etcd's auth needs a root user holding the root role before it can be enabled.
        admin._post("/v3/auth/user/add", {"name": "root", "password": "root-secret"})
        admin._post("/v3/auth/role/add", {"name": "root"})
        admin._post("/v3/auth/user/grant", {"user": "root", "role": "root"})
        admin._post("/v3/auth/enable", {})
        with pytest.raises(etcd.EtcdError):
            admin.put("/svc/a", "127.0.0.1:9001")  # no credentials: refused
        authed = etcd.Client(url, username="root", password="root-secret")
        try:
            registrar = etcd.Registrar(authed, "/svc/a", "127.0.0.1:9001", kit=recording().kit)
            registrar.register()
            instancer = etcd.Instancer(authed, "/svc/", kit=recording().kit)
            try:
                seen: list[object] = []
                instancer.subscribe(seen.append)
                assert seen == [frozenset({Instance("127.0.0.1", 9001)})]
            finally:
                instancer.stop()
                registrar.deregister()
            wrong = etcd.Client(url, username="root", password="wrong")
            with pytest.raises(etcd.EtcdError, match="credentials"):
                wrong.get_prefix("/")
            wrong.close()
        finally:
            authed.close()
    finally:
        admin.close()
        server.terminate()
        server.wait(10)


def test_stop_ends_the_watching_thread_at_once(client: etcd.Client) -> None:
    instancer = etcd.Instancer(client, _prefix(), watch_timeout=60.0, kit=recording().kit)
    time.sleep(0.2)  # the watch is open and its read blocked
    instancer.stop()  # joins the thread (for up to 5 s)
    assert not instancer._thread.is_alive()


def test_async_instancer_lists_and_watches() -> None:
    url = require_env("KITOBSTEST_ETCD_URL")
    prefix = _prefix()

    async def main() -> None:
        client = etcd.AsyncClient(url)
        try:
            await client.put(prefix + "a", "127.0.0.1:9001")
            instancer = await etcd.AsyncInstancer(client, prefix, kit=recording().kit).start()
            seen: list[object] = []
            instancer.subscribe(seen.append)
            assert seen == [frozenset({Instance("127.0.0.1", 9001)})]
            await client.put(prefix + "b", "127.0.0.1:9002")
            for _ in range(500):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.01)
            assert seen[-1] == frozenset({Instance("127.0.0.1", 9001), Instance("127.0.0.1", 9002)})
            await client.delete(prefix + "a")
            await client.delete(prefix + "b")
            for _ in range(500):
                if seen[-1] == frozenset():
                    break
                await asyncio.sleep(0.01)
            assert seen[-1] == frozenset()
            instancer.stop()
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.slow
def test_async_instancer_recovers_from_a_server_restart(tmp_path: Path) -> None:
    _require_etcd_binary()
    port, peer = free_port(), free_port()
    holder = [_start_etcd(tmp_path / "etcd", port, peer)]

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(1000):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in time")

    async def main() -> None:
        client = etcd.AsyncClient(f"http://127.0.0.1:{port}", timeout=0.5)
        instancer = etcd.AsyncInstancer(client, "/svc/", backoff=0.05, kit=recording().kit)
        seen: list[object] = []
        instancer.subscribe(seen.append)
        await instancer.start()
        try:
            await client.put("/svc/a", "127.0.0.1:9001")
            await until(lambda: seen[-1] == frozenset({Instance("127.0.0.1", 9001)}))
            holder[0].terminate()
            await asyncio.to_thread(holder[0].wait, 10)
            await until(lambda: isinstance(seen[-1], Exception))
            holder[0] = await asyncio.to_thread(_start_etcd, tmp_path / "etcd", port, peer)
            await until(lambda: seen[-1] == frozenset({Instance("127.0.0.1", 9001)}))
            await client.put("/svc/b", "127.0.0.1:9002")  # the watch is back
            await until(lambda: len(seen[-1]) == 2)  # type: ignore[arg-type]
        finally:
            instancer.stop()
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        holder[0].terminate()
        holder[0].wait(10)
