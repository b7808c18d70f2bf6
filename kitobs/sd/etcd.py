"""etcd v3 discovery: an Instancer on a key prefix and a Registrar with a lease, over httpx.

The client is a thin one over etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/watch``,
``/v3/lease/...``, served by every etcd 3.4+ on its client port) on httpx, kitobs's ``http``
extra. Neither Python etcd client keeps a watch alive across a server restart: etcd3gw's watch
stops without an error, aetcd's raises and does not resume (and is asyncio only). Owning the
watch loop lets the `Instancer` notice the end of the stream, publish the error, and re-list and
re-watch from the revision it saw, which is the part that matters for discovery.

Values under the prefix are instances, ``"host:port"`` (keys only keep them apart, as in
go-kit); a value that is not one is skipped. On every watch event the whole prefix is read again
(go-kit's choice: simple, and a missed event cannot leave a wrong set). Example::

    client = etcd.Client("http://127.0.0.1:2379", username="svc", password=secret)
    instancer = etcd.Instancer(client, "/services/users/")
    registrar = etcd.Registrar(client, "/services/users/10.0.0.5:8080", "10.0.0.5:8080")
    registrar.register()   # a lease of ttl seconds, kept alive every heartbeat seconds

TLS: ``ca=`` (a CA bundle path, or False to not verify), ``cert=`` and ``key=`` (a client
certificate) are passed to httpx. With *username*, the client authenticates
(``/v3/auth/authenticate``) and sends the token, getting a new one when etcd refuses it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from kitobs.errors import ConfigError
from kitobs.sd.core import Instance, InstanceCache, Listener, _Lazy, _resolve, parse_instance

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = [
    "AsyncClient",
    "AsyncInstancer",
    "Client",
    "EtcdError",
    "Instancer",
    "Registrar",
    "from_config",
]


class EtcdError(Exception):
    """EtcdError is an error etcd answered, e.g. ``EtcdError("requested lease not found")``."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def _prefix_end(prefix: bytes) -> bytes:
    # The first key after every key starting with prefix (etcd's "range_end").
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


def _range_body(prefix: str) -> dict[str, Any]:
    raw = prefix.encode()
    return {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))}


def _parse_range(data: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    pairs = [(_unb64(kv["key"]), _unb64(kv.get("value", ""))) for kv in data.get("kvs", [])]
    return pairs, int(data["header"]["revision"])


def _watch_body(prefix: str, start_revision: int) -> dict[str, Any]:
    return {"create_request": {**_range_body(prefix), "start_revision": str(start_revision)}}


def _answer(status: int, data: dict[str, Any]) -> dict[str, Any]:
    if status != 200 or "error" in data:
        raise EtcdError(str(data.get("error") or data.get("message") or data), data.get("code"))
    return data


def _watch_result(line: str) -> dict[str, Any] | None:
    # One line of the watch stream: its result, None for a blank line; raises on an error.
    if not line.strip():
        return None
    message = json.loads(line)
    if "error" in message:
        error = message["error"]
        raise EtcdError(str(error.get("message", error)), error.get("grpc_code"))
    result: dict[str, Any] = message.get("result", {})
    if result.get("canceled"):
        raise EtcdError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
    return result


def _options(
    urls: str | Sequence[str],
    username: str | None,
    password: str | None,
    ca: str | bool | None,
    cert: str | None,
    key: str | None,
) -> tuple[list[str], dict[str, Any]]:
    # The checks and httpx arguments Client and AsyncClient share.
    found = [urls] if isinstance(urls, str) else list(urls)
    if not found:
        raise ConfigError("no etcd URL given: pass e.g. 'http://127.0.0.1:2379'")
    for url in found:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"etcd URL {url!r} needs a scheme: http:// or https://")
    if (username is None) != (password is None):
        raise ConfigError("etcd username and password go together: give both or neither")
    if key is not None and cert is None:
        raise ConfigError("an etcd client key needs its certificate: pass cert= too")
    verify: Any = True if ca is None else ca
    client_cert: Any = None if cert is None else (cert if key is None else (cert, key))
    return found, {"verify": verify, "cert": client_cert}


class Client:
    """Client talks to etcd's v3 JSON gateway, e.g. ``Client("http://127.0.0.1:2379")``.

    *urls* is one URL or several of the same cluster: a connection error moves to the next.
    *timeout* bounds each unary request (the watch stream uses *watch_timeout* of the
    Instancer). `close` closes the connection pool.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca: str | bool | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.urls, tls = _options(urls, username, password, ca, cert, key)
        self._username = username
        self._password = password
        self._token: str | None = None
        self._current = 0
        self._lock = threading.Lock()
        self._http = httpx.Client(**tls, timeout=timeout)

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.urls[self._current % len(self.urls)].rstrip("/") + path

    def _headers(self, fresh: bool = False) -> dict[str, str]:
        if self._username is None:
            return {}
        with self._lock:
            if self._token is None or fresh:
                self._token = None
                answer = self._http.post(
                    self._url("/v3/auth/authenticate"),
                    json={"name": self._username, "password": self._password},
                )
                body = answer.json()
                if answer.status_code != 200 or "token" not in body:
                    raise EtcdError(f"etcd refused the credentials: {body.get('error', body)}")
                self._token = str(body["token"])
            return {"Authorization": self._token}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for _ in range(len(self.urls)):
            try:
                answer = self._http.post(self._url(path), json=body, headers=self._headers())
                if answer.status_code == 401 and self._username is not None:
                    # The token expired (etcd's simple tokens last minutes): get another.
                    answer = self._http.post(
                        self._url(path), json=body, headers=self._headers(fresh=True)
                    )
            except httpx.TransportError as error:
                last = error
                self._current += 1
                continue
            return _answer(answer.status_code, answer.json())
        assert last is not None
        raise last

    # -- key-value ---------------------------------------------------------------------------

    def get_prefix(self, prefix: str) -> tuple[list[tuple[str, str]], int]:
        """get_prefix gives the ``(key, value)`` pairs under *prefix* and the store's revision."""
        return _parse_range(self._post("/v3/kv/range", _range_body(prefix)))

    def put(self, key: str, value: str, *, lease: int = 0) -> None:
        """put sets *key* to *value*, attached to *lease* when given."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self._post("/v3/kv/put", body)

    def delete(self, key: str) -> int:
        """delete removes *key*; returns how many keys went (0 or 1)."""
        return int(self._post("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    # -- leases ------------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        """grant makes a lease of *ttl* seconds and returns its ID."""
        return int(self._post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        """keepalive refreshes *lease*; returns its new TTL, 0 when etcd no longer has it."""
        data = self._post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """revoke ends *lease*, deleting its keys."""
        self._post("/v3/lease/revoke", {"ID": str(lease)})

    # -- watch -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch_prefix(
        self, prefix: str, start_revision: int, *, timeout: float | None = None
    ) -> Iterator[_Watch]:
        """watch_prefix streams the watch responses for *prefix* from *start_revision*.

        A context manager giving an iterable of the ``result`` objects; the iteration ends when
        the server closes the stream, and raises `EtcdError` on an error answer and an httpx
        error on a broken connection or when nothing came for *timeout* seconds.
        """
        body = _watch_body(prefix, start_revision)
        request = self._http.build_request(
            "POST",
            self._url("/v3/watch"),
            json=body,
            headers=self._headers(),
            timeout=httpx.Timeout(self._http.timeout.connect, read=timeout),
        )
        response = self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise EtcdError(f"etcd refused the watch: {response.text}")
            yield _Watch(response)
        finally:
            response.close()

    def close(self) -> None:
        """close closes the HTTP connections."""
        self._http.close()


class _Watch:
    """The results of one watch stream, and a `close` another thread may call."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._response.iter_lines():
            result = _watch_result(line)
            if result is not None:
                yield result

    def close(self) -> None:
        # Closing the response from another thread does not wake a read blocked in recv();
        # shutting the socket down does.
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


class Instancer:
    """Instancer publishes the instances under an etcd key *prefix*, e.g. ``"/services/users/"``.

    The first read runs in the constructor; a daemon thread then watches. After any error (a
    lost connection, a server restart, a compacted revision) it publishes the error, waits
    *backoff* seconds (doubling up to 5 s), and re-lists and re-watches. *watch_timeout*: a
    quiet watch is re-made after that many seconds, so a stream a proxy dropped silently is
    noticed. Implements `kitobs.sd.Instancer`.
    """

    def __init__(
        self,
        client: Client,
        prefix: str,
        *,
        service: str | None = None,
        backoff: float = 0.2,
        watch_timeout: float = 30.0,
        kit: Kit | None = None,
    ) -> None:
        if not prefix:
            raise ConfigError("the etcd prefix is empty: pass e.g. '/services/users/'")
        if backoff <= 0 or watch_timeout <= 0:
            raise ConfigError("backoff and watch_timeout are seconds: give positive numbers")
        self.client = client
        self.prefix = prefix
        self.service = service if service is not None else prefix
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self._cache = InstanceCache(self.service, kit=kit)
        self._stopped = threading.Event()
        self._watch: _Watch | None = None
        self._revision = self._list()
        self._thread = threading.Thread(target=self._run, name=f"kitobs-etcd-{prefix}", daemon=True)
        self._thread.start()

    def _list(self) -> int | None:
        try:
            pairs, revision = self.client.get_prefix(self.prefix)
        except Exception as error:  # httpx errors, EtcdError
            self._cache.publish(error)
            return None
        self._cache.publish(_parse_values(pairs))
        return revision

    def _run(self) -> None:
        delay = self._backoff
        while not self._stopped.is_set():
            revision = self._revision
            if revision is None:
                if self._stopped.wait(delay):
                    return
                delay = min(delay * 2, 5.0)
                self._revision = self._list()
                continue
            try:
                with self.client.watch_prefix(
                    self.prefix, revision + 1, timeout=self._watch_timeout
                ) as results:
                    self._watch = results
                    if self._stopped.is_set():
                        return
                    for result in results:
                        delay = self._backoff
                        if result.get("events"):
                            self._revision = self._list()
                            if self._revision is None:
                                break
                        if self._stopped.is_set():
                            return
                self._watch = None  # closed with its response: stop() must not touch it
                # The stream ended (a server going away): read everything again.
                if self._revision is not None:
                    self._revision = self._list()
            except httpx.ReadTimeout:
                self._watch = None
                self._revision = self._list()  # a quiet watch: re-made, the set re-checked
            except Exception as error:  # a broken stream, a refused watch
                self._watch = None
                if self._stopped.is_set():
                    return
                self._cache.publish(error)
                self._revision = None

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*."""
        self._cache.unsubscribe(listener)

    def stop(self) -> None:
        """stop ends the watch and its thread, and drops every listener."""
        self._stopped.set()
        watch = self._watch
        if watch is not None:
            with contextlib.suppress(Exception):  # the stream may have ended already
                watch.close()
        self._cache.stop()
        if threading.current_thread() is not self._thread:  # stop() from a listener: no join
            self._thread.join(timeout=5.0)


class Registrar:
    """Registrar puts *key* = *value* in etcd with a lease of *ttl* seconds and keeps it alive.

    A daemon thread refreshes the lease every *heartbeat* seconds; when etcd lost it (the lease
    expired while the server was away) it grants a new one and puts the key again. Errors are
    logged at warn on *kit*'s logger, not raised. `deregister` deletes only this key and
    revokes the lease. etcd rounds a TTL below 2 s up to 2 s. Implements `kitobs.sd.Registrar`.
    """

    def __init__(
        self,
        client: Client,
        key: str,
        value: str,
        *,
        ttl: int = 10,
        heartbeat: float | None = None,
        kit: Kit | None = None,
    ) -> None:
        if ttl < 2:
            raise ConfigError(f"ttl is {ttl}: etcd leases last at least 2 s")
        beat = heartbeat if heartbeat is not None else ttl / 3
        if not 0 < beat < ttl:
            raise ConfigError(f"heartbeat is {beat}: give seconds between 0 and ttl ({ttl})")
        self.client = client
        self.key = key
        self.value = value
        self._ttl = ttl
        self._heartbeat = beat
        self.lease: int | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._logger = _Lazy(_logger_of, kit, "")

    def _announce(self) -> None:
        lease = self.client.grant(self._ttl)
        self.client.put(self.key, self.value, lease=lease)
        self.lease = lease

    def _warn(self, message: str, error: Exception) -> None:
        with contextlib.suppress(Exception):  # recording never raises
            self._logger.get().warn("msg", message, "key", self.key, "error", repr(error))

    def register(self) -> None:
        """register announces the key now (or logs why not) and starts the keep-alive."""
        try:
            self._announce()
        except Exception as error:  # retried by the keep-alive thread
            self._warn("etcd registration failed, retrying", error)
        if self._thread is None:
            self._stopped.clear()
            self._thread = threading.Thread(
                target=self._keep, name=f"kitobs-etcd-lease-{self.key}", daemon=True
            )
            self._thread.start()

    def _keep(self) -> None:
        while not self._stopped.wait(self._heartbeat):
            try:
                lease = self.lease
                if lease is None or self.client.keepalive(lease) <= 0:
                    self._announce()
            except EtcdError:
                try:
                    self._announce()  # e.g. "requested lease not found"
                except Exception as error:
                    self._warn("etcd registration failed, retrying", error)
            except Exception as error:  # etcd away: try again at the next beat
                self._warn("etcd lease keep-alive failed, retrying", error)

    def deregister(self) -> None:
        """deregister stops the keep-alive, deletes this key and revokes its lease."""
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)
        try:
            self.client.delete(self.key)
            if self.lease is not None:
                self.client.revoke(self.lease)
        except Exception as error:  # the lease's expiry removes the key anyway
            self._warn("etcd deregistration failed", error)
        self.lease = None


def _logger_of(kit: Kit, _: str) -> Any:
    return kit.logger


def from_config(kit: Kit | None = None, **overrides: Any) -> Client:
    """from_config builds a `Client` from the ``[sd]`` settings (``etcd_urls``, ``etcd_ca``).

    E.g. ``from_config(kit, username="svc", password=secret)``: keyword arguments of `Client`
    win. *kit* None uses the default Kit.
    """
    s = _resolve(kit).settings.sd
    params: dict[str, Any] = {"ca": s.etcd_ca or None}
    params.update(overrides)
    urls = params.pop("urls", s.etcd_urls)
    if not urls:
        raise ConfigError("no etcd URL: set [sd] etcd_urls (KITOBS_SD_ETCD_URLS) or pass urls=")
    return Client(urls, **params)


class AsyncClient:
    """AsyncClient is `Client` on asyncio (``httpx.AsyncClient``), e.g. for `AsyncInstancer`.

    The same arguments, requests and answers as `Client` (the bodies and their parsing are
    shared); its methods are coroutines. `aclose` closes the connections.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca: str | bool | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.urls, tls = _options(urls, username, password, ca, cert, key)
        self._username = username
        self._password = password
        self._token: str | None = None
        self._current = 0
        self._http = httpx.AsyncClient(**tls, timeout=timeout)

    def _url(self, path: str) -> str:
        return self.urls[self._current % len(self.urls)].rstrip("/") + path

    async def _headers(self, fresh: bool = False) -> dict[str, str]:
        if self._username is None:
            return {}
        if self._token is None or fresh:
            answer = await self._http.post(
                self._url("/v3/auth/authenticate"),
                json={"name": self._username, "password": self._password},
            )
            body = answer.json()
            if answer.status_code != 200 or "token" not in body:
                raise EtcdError(f"etcd refused the credentials: {body.get('error', body)}")
            self._token = str(body["token"])
        return {"Authorization": self._token}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for _ in range(len(self.urls)):
            try:
                headers = await self._headers()
                answer = await self._http.post(self._url(path), json=body, headers=headers)
                if answer.status_code == 401 and self._username is not None:
                    headers = await self._headers(fresh=True)
                    answer = await self._http.post(self._url(path), json=body, headers=headers)
            except httpx.TransportError as error:
                last = error
                self._current += 1
                continue
            return _answer(answer.status_code, answer.json())
        assert last is not None
        raise last

    async def get_prefix(self, prefix: str) -> tuple[list[tuple[str, str]], int]:
        """get_prefix gives the ``(key, value)`` pairs under *prefix* and the store's revision."""
        return _parse_range(await self._post("/v3/kv/range", _range_body(prefix)))

    async def put(self, key: str, value: str, *, lease: int = 0) -> None:
        """put sets *key* to *value*, attached to *lease* when given."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        await self._post("/v3/kv/put", body)

    async def delete(self, key: str) -> int:
        """delete removes *key*; returns how many keys went (0 or 1)."""
        data = await self._post("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))

    async def watch_prefix(
        self, prefix: str, start_revision: int, *, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """watch_prefix yields the watch results for *prefix* from *start_revision*.

        An async generator; it ends when the server closes the stream and raises as
        `Client.watch_prefix` does.
        """
        request = self._http.build_request(
            "POST",
            self._url("/v3/watch"),
            json=_watch_body(prefix, start_revision),
            headers=await self._headers(),
            timeout=httpx.Timeout(self._http.timeout.connect, read=timeout),
        )
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise EtcdError(f"etcd refused the watch: {response.text}")
            async for line in response.aiter_lines():
                result = _watch_result(line)
                if result is not None:
                    yield result
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """aclose closes the HTTP connections."""
        await self._http.aclose()


class AsyncInstancer:
    """AsyncInstancer is `Instancer` on asyncio: ``await AsyncInstancer(client, prefix).start()``.

    `start` reads the prefix and starts the watching task; the task re-lists and re-watches
    after errors as `Instancer` does; `stop` cancels it. Implements `kitobs.sd.Instancer`.
    """

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        *,
        service: str | None = None,
        backoff: float = 0.2,
        watch_timeout: float = 30.0,
        kit: Kit | None = None,
    ) -> None:
        if not prefix:
            raise ConfigError("the etcd prefix is empty: pass e.g. '/services/users/'")
        if backoff <= 0 or watch_timeout <= 0:
            raise ConfigError("backoff and watch_timeout are seconds: give positive numbers")
        self.client = client
        self.prefix = prefix
        self.service = service if service is not None else prefix
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self._cache = InstanceCache(self.service, kit=kit)
        self._revision: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> AsyncInstancer:
        """start reads the prefix (publishing the set or the error) and starts watching."""
        self._revision = await self._list()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _list(self) -> int | None:
        try:
            pairs, revision = await self.client.get_prefix(self.prefix)
        except Exception as error:  # httpx errors, EtcdError
            self._cache.publish(error)
            return None
        self._cache.publish(_parse_values(pairs))
        return revision

    async def _run(self) -> None:
        delay = self._backoff
        while True:
            revision = self._revision
            if revision is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._revision = await self._list()
                continue
            try:
                async for result in self.client.watch_prefix(
                    self.prefix, revision + 1, timeout=self._watch_timeout
                ):
                    delay = self._backoff
                    if result.get("events"):
                        self._revision = await self._list()
                        if self._revision is None:
                            break
                if self._revision is not None:
                    self._revision = await self._list()
            except httpx.ReadTimeout:
                self._revision = await self._list()
            except Exception as error:  # a broken stream, a refused watch
                self._cache.publish(error)
                self._revision = None

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*."""
        self._cache.unsubscribe(listener)

    def stop(self) -> None:
        """stop cancels the watching task and drops every listener."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()
        self._cache.stop()


def _parse_values(pairs: list[tuple[str, str]]) -> frozenset[Instance]:
    found = set()
    for _, value in pairs:
        with contextlib.suppress(ValueError):  # not an instance: skipped
            found.add(parse_instance(value))
    return frozenset(found)
