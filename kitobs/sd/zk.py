"""ZooKeeper discovery (kazoo): an Instancer on a znode's children and a Registrar of an
ephemeral child.

Each child of *path* holds one instance as its data, ``"host:port"`` (go-kit's layout); a child
whose data is not one is skipped. The `Instancer` watches the children, publishes an error when
the connection is suspended or the session lost, and a fresh full set once connected again. The
`Registrar` creates an ephemeral sequential child; kazoo never re-creates ephemeral nodes after
a lost session, so the Registrar does, and `Registrar.deregister` deletes only the node it
created (go-kit's deletes the parent path). Needs ``kitobs[zookeeper]``.

Example::

    zk = kitobs.sd.zk.client("127.0.0.1:2181", username="svc", password=secret)
    instancer = zk.Instancer(zk_client, "/services/users")
    registrar = zk.Registrar(zk_client, "/services/users", "10.0.0.5:8080")

With *username*, `client` adds digest credentials and makes every node it creates readable by
all and writable only by that user (``acl=`` of `Registrar` replaces that).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NoNodeError
from kazoo.recipe.watchers import ChildrenWatch
from kazoo.security import READ_ACL_UNSAFE, make_digest_acl

from kitobs.errors import ConfigError
from kitobs.sd.core import InstanceCache, Listener, _Lazy, _resolve, parse_instance

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["Instancer", "Registrar", "client", "from_config"]


def client(
    hosts: str | Sequence[str],
    *,
    username: str | None = None,
    password: str | None = None,
    session_timeout: float = 5.0,
    start: bool = True,
    connect_timeout: float = 10.0,
) -> KazooClient:
    """client builds (and by default starts) a kazoo client, e.g. ``client("127.0.0.1:2181")``.

    With *username* and *password* it authenticates with the digest scheme and its default ACL
    lets everyone read and only that user change what it creates. The connection is retried
    forever, as discovery needs.
    """
    if (username is None) != (password is None):
        raise ConfigError("ZooKeeper username and password go together: give both or neither")
    if session_timeout < 1:
        raise ConfigError(f"session_timeout is {session_timeout}: ZooKeeper needs at least 1 s")
    joined = hosts if isinstance(hosts, str) else ",".join(hosts)
    if not joined:
        raise ConfigError("no ZooKeeper host given: pass e.g. '127.0.0.1:2181'")
    options: dict[str, Any] = {
        "hosts": joined,
        "timeout": session_timeout,
        "connection_retry": {"max_tries": -1, "max_delay": 2.0},
    }
    if username is not None and password is not None:
        options["auth_data"] = [("digest", f"{username}:{password}")]
        options["default_acl"] = [make_digest_acl(username, password, all=True), *READ_ACL_UNSAFE]
    zk = KazooClient(**options)
    if start:
        zk.start(timeout=connect_timeout)
    return zk


def _logger_of(kit: Kit, _: str) -> Any:
    return kit.logger


class Instancer:
    """Instancer publishes the instances under znode *path*, e.g. ``"/services/users"``.

    *client* is a started kazoo client (`client`); *path* is created when missing. *service*
    (default: *path*) labels the metrics. Implements `kitobs.sd.Instancer`.
    """

    def __init__(
        self,
        client: KazooClient,
        path: str,
        *,
        service: str | None = None,
        kit: Kit | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigError(f"ZooKeeper path {path!r} must start with '/'")
        self.client = client
        self.path = path.rstrip("/") or "/"
        self.service = service if service is not None else self.path
        self._cache = InstanceCache(self.service, kit=kit)
        self._stopped = False
        client.ensure_path(self.path)
        client.add_listener(self._state)
        self._watch = ChildrenWatch(client, self.path, self._children)

    def _children(self, children: list[str]) -> bool:
        if self._stopped:
            return False  # ends kazoo's watch
        self._read(children)
        return True

    def _read(self, children: list[str] | None = None) -> None:
        try:
            names = self.client.get_children(self.path) if children is None else children
            found = set()
            for name in names:
                try:
                    data, _ = self.client.get(f"{self.path}/{name}")
                except NoNodeError:
                    continue  # gone since the listing
                with contextlib.suppress(ValueError, UnicodeDecodeError):  # not an instance
                    found.add(parse_instance(data.decode()))
        except Exception as error:  # connection loss mid-read
            self._cache.publish(error)
            return
        self._cache.publish(frozenset(found))

    def _state(self, state: str) -> None:
        # Called on kazoo's connection thread: nothing blocking here.
        if self._stopped:
            return
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            self._cache.publish(ConnectionError(f"ZooKeeper connection {state.lower()}"))
        elif state == KazooState.CONNECTED:
            self.client.handler.spawn(self._read)

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*."""
        self._cache.unsubscribe(listener)

    def stop(self) -> None:
        """stop ends the watch (the client stays open) and drops every listener."""
        self._stopped = True
        self.client.remove_listener(self._state)
        self._cache.stop()


class Registrar:
    """Registrar creates an ephemeral sequential child of *path* holding *data*.

    E.g. ``Registrar(zk, "/services/users", "10.0.0.5:8080")`` creates
    ``/services/users/instance-0000000007``. When the session is lost it creates a new node
    once connected again. Errors are logged at warn, not raised. Implements
    `kitobs.sd.Registrar`.
    """

    def __init__(
        self,
        client: KazooClient,
        path: str,
        data: str,
        *,
        name: str = "instance-",
        acl: Sequence[Any] | None = None,
        kit: Kit | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigError(f"ZooKeeper path {path!r} must start with '/'")
        self.client = client
        self.path = path.rstrip("/")
        self.data = data
        self._name = name
        self._acl = list(acl) if acl is not None else None
        self.node: str | None = None
        self._registered = False
        self._lost = False
        self._lock = threading.Lock()
        self._logger = _Lazy(_logger_of, kit, "")

    def _warn(self, message: str, error: Exception) -> None:
        with contextlib.suppress(Exception):  # recording never raises
            self._logger.get().warn("msg", message, "path", self.path, "error", repr(error))

    def _create(self) -> None:
        with self._lock:
            if not self._registered:
                return
            node = self.node
            if node is not None and self.client.exists(node) is not None:
                return
            self.client.ensure_path(self.path, acl=self._acl)
            self.node = self.client.create(
                f"{self.path}/{self._name}",
                self.data.encode(),
                acl=self._acl,
                ephemeral=True,
                sequence=True,
            )

    def _safe_create(self) -> None:
        try:
            self._create()
        except Exception as error:  # retried on the next CONNECTED
            self._warn("ZooKeeper registration failed", error)

    def _state(self, state: str) -> None:
        # On kazoo's connection thread: the re-creation runs on its handler.
        if state == KazooState.LOST:
            self._lost = True
        elif state == KazooState.CONNECTED and self._lost:
            self._lost = False
            self.client.handler.spawn(self._safe_create)

    def register(self) -> None:
        """register creates the node (or logs why not) and re-creates it after a lost session."""
        if not self._registered:
            self._registered = True
            self.client.add_listener(self._state)
        self._safe_create()

    def deregister(self) -> None:
        """deregister deletes the node this Registrar created, and no other."""
        self._registered = False
        self.client.remove_listener(self._state)
        with self._lock:
            node, self.node = self.node, None
        if node is None:
            return
        try:
            self.client.delete(node)
        except NoNodeError:
            pass  # the session ended already, and the node with it
        except Exception as error:
            self._warn("ZooKeeper deregistration failed", error)


def from_config(kit: Kit | None = None, **overrides: Any) -> KazooClient:
    """from_config builds a started `client` from the ``[sd]`` settings (``zookeeper_hosts``).

    E.g. ``from_config(kit, username="svc", password=secret)``: keyword arguments of `client`
    win. *kit* None uses the default Kit.
    """
    s = _resolve(kit).settings.sd
    params: dict[str, Any] = {"session_timeout": s.zookeeper_session_timeout}
    params.update(overrides)
    hosts = params.pop("hosts", s.zookeeper_hosts)
    if not hosts:
        raise ConfigError(
            "no ZooKeeper host: set [sd] zookeeper_hosts (KITOBS_SD_ZOOKEEPER_HOSTS) or pass hosts="
        )
    return client(hosts, **params)
