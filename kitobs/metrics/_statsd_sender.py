"""The statsd backend's socket side: packing lines into packets and sending them, never blocking.

`pack` joins encoded lines into packets of at most *packet_size* bytes without splitting a line.
`Sender` owns one socket (UDP, TCP, Unix datagram or Unix stream), always non-blocking, and a
bounded queue of packets waiting to be written. Whatever cannot be queued or written is dropped and
counted in lines, by reason, so `kitobs.metrics.statsd.Provider` can report it. Only the flusher
thread resolves host names (``getaddrinfo`` can block); every other call is non-blocking.

Example::

    >>> pack(["a:1|c", "b:2|c"], 64, stream=False)
    ([(b'a:1|c\\nb:2|c', 2)], 0)
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import os
import select
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kitobs.config import StatsdSettings, key_name
from kitobs.errors import ConfigError

__all__ = [
    "TRANSPORTS",
    "Resolver",
    "Sender",
    "pack",
    "parse_address",
]

#: Transports by Go's network names: ``unix`` is a Unix stream socket, ``unixgram`` a datagram one.
TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "unix", "unixgram")

#: Resolver looks a host up like `socket.getaddrinfo` (host, port, type=...), e.g. that function.
Resolver = Callable[..., Sequence[tuple[Any, Any, Any, Any, Any]]]

_STREAM = {"udp": False, "tcp": True, "unix": True, "unixgram": False}
# A write that would block is not an error: the bytes stay queued for the next attempt.
_AGAIN = (BlockingIOError, InterruptedError)


def pack(
    lines: Sequence[str], packet_size: int, *, stream: bool
) -> tuple[list[tuple[bytes, int]], int]:
    """pack joins *lines* into packets of at most *packet_size* bytes, e.g. one datagram each.

    Lines are newline-joined and never split; on a stream every packet also ends in a newline, so
    consecutive writes cannot glue two lines together. A carriage return inside an item joins
    lines that must travel in one packet (a negative gauge, ``0|g`` then ``-5|g``); it is sent
    as a newline.

    Returns:
        ``(packets, too_large)``: each packet with the number of lines in it, and how many lines
        were longer than a packet on their own (dropped).
    """
    if not lines:
        return [], 0
    # One join and encode, then cut at the last newline that fits: a few C calls per packet
    # instead of Python work per line.
    data = "\n".join(lines).encode()
    limit = packet_size - 1 if stream else packet_size
    packets: list[tuple[bytes, int]] = []
    starts: list[int] = []  # where each packet began in data
    too_large = 0
    start, total = 0, len(data)
    while start < total:
        if total - start <= limit:
            end = total
        else:
            end = data.rfind(b"\n", start, start + limit + 1)
            if end <= start:  # the item at start is longer than a packet: cut it out
                nxt = data.find(b"\n", start)
                stop = total if nxt == -1 else nxt
                too_large += data.count(b"\r", start, stop) + 1
                data = data[:start] + data[stop + 1 :] if nxt != -1 else data[: max(start - 1, 0)]
                total = len(data)
                if packets:  # refill the packet before it, which stopped short of it
                    packets.pop()
                    start = starts.pop()
                continue
        chunk = data[start:end]
        lines_in = chunk.count(b"\n") + chunk.count(b"\r") + 1
        if stream:
            chunk += b"\n"
        packets.append((chunk.replace(b"\r", b"\n"), lines_in))
        starts.append(start)
        start = end + 1
    return packets, too_large


def parse_address(transport: str, address: str) -> tuple[str, int] | str:
    """parse_address checks *address* for *transport*, e.g. ``("127.0.0.1", 8125)`` or a path.

    Raises:
        ConfigError: an unknown transport, or an address that is not ``host:port`` (IPv6 in
            brackets) for udp/tcp, or not a path for unix/unixgram.
    """
    if transport not in TRANSPORTS:
        raise ConfigError(
            "unknown statsd transport",
            key=key_name(StatsdSettings, "transport"),
            value=transport,
            allowed=TRANSPORTS,
        )
    if transport in ("unix", "unixgram"):
        path = address.removeprefix("unix://")
        if not path or "\0" in path:
            raise ConfigError(
                "statsd address is not a socket path",
                key=key_name(StatsdSettings, "address"),
                value=address,
                allowed="a filesystem path such as /run/statsd.sock",
            )
        return path
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            "statsd address is not host:port",
            key=key_name(StatsdSettings, "address"),
            value=address,
            allowed="host:port such as 127.0.0.1:8125, or [::1]:8125",
        )
    return host, int(port)


def _literal_family(host: str) -> int | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


class Sender:
    """Sender writes statsd packets to one address without ever blocking, e.g. over UDP.

    `enqueue` adds packets to a queue bounded to *queue_size* lines and `drain` writes as much of
    it as the socket takes right now; both return at once. A packet the queue cannot take, or that
    fails to send, is dropped: `take_dropped` hands the counts (in lines, by reason) to the caller.
    A failed stream connection is retried on a later drain, after *retry_interval* seconds.

    Not thread-safe: the provider serialises calls under its flush lock.
    """

    __slots__ = (
        "_addr",
        "_connected",
        "_dropped",
        "_family",
        "_head_sent",
        "_host",
        "_next_connect",
        "_next_resolve",
        "_on_error",
        "_path",
        "_pending",
        "_pending_lines",
        "_port",
        "_queue_size",
        "_resolve_interval",
        "_resolver",
        "_retry_interval",
        "_sock",
        "stream",
        "transport",
    )

    def __init__(
        self,
        transport: str,
        address: str,
        *,
        queue_size: int = 10000,
        resolve_interval: float = 60.0,
        retry_interval: float = 1.0,
        on_error: Callable[[Exception], None] | None = None,
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        parsed = parse_address(transport, address)
        self._resolver = resolver
        self.transport = transport
        self.stream = _STREAM[transport]
        self._queue_size = queue_size
        self._resolve_interval = resolve_interval
        self._retry_interval = retry_interval
        self._on_error = on_error
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque()
        self._pending_lines = 0
        self._head_sent = 0  # bytes of the first pending packet already written (streams)
        self._dropped: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._connected = False
        self._next_connect = 0.0
        self._path = ""
        self._host = ""
        self._port = 0
        self._family: int = socket.AF_UNIX if transport.startswith("unix") else socket.AF_INET
        self._addr: tuple[str, int] | tuple[str, int, int, int] | str | None = None
        self._next_resolve = 0.0
        if isinstance(parsed, str):
            self._path = parsed
            self._addr = parsed
            self._next_resolve = float("inf")
        else:
            self._host, self._port = parsed
            literal = _literal_family(self._host)
            if literal is not None:
                # An IP literal needs no DNS: usable at once, never re-resolved.
                self._family = literal
                self._addr = (self._host, self._port)
                self._next_resolve = float("inf")

    # ---- queue

    def enqueue(self, packets: Iterable[tuple[bytes, int]]) -> None:
        """enqueue queues (packet, line count) pairs; what does not fit is dropped (queue_full)."""
        for packet, lines in packets:
            if self._pending_lines + lines > self._queue_size:
                self._drop("queue_full", lines)
                continue
            self._pending.append((packet, lines))
            self._pending_lines += lines

    @property
    def pending_lines(self) -> int:
        """pending_lines is how many lines wait to be written, e.g. while the server is down."""
        return self._pending_lines

    def take_dropped(self) -> dict[str, int]:
        """take_dropped returns the lines dropped since the last call, by reason, and resets."""
        dropped, self._dropped = self._dropped, {}
        return dropped

    def _drop(self, reason: str, lines: int) -> None:
        if lines:
            self._dropped[reason] = self._dropped.get(reason, 0) + lines

    def _fail(self, err: Exception) -> None:
        if self._on_error is not None:
            # An error handler must not break the sender.
            with contextlib.suppress(Exception):
                self._on_error(err)

    # ---- address and socket

    def lookup(self, now: float | None = None) -> tuple[int, tuple[object, ...]] | None:
        """lookup resolves the host name when due, e.g. every 60 s; it blocks on DNS.

        It changes nothing: pass what it returns to `use`. The provider calls it from the
        flusher thread without holding its flush lock, so a slow resolver delays only the
        flusher, never a caller's `flush` or `close`.
        """
        now = time.monotonic() if now is None else now
        if now < self._next_resolve:
            return None
        self._next_resolve = now + (self._resolve_interval or float("inf"))
        kind = socket.SOCK_STREAM if self.stream else socket.SOCK_DGRAM
        try:
            infos = self._resolver(self._host, self._port, type=kind)
        except OSError as err:
            self._fail(err)
            return None  # keep the last good address, if any
        family, _, _, _, sockaddr = infos[0]
        return int(family), (str(sockaddr[0]), int(sockaddr[1]), *sockaddr[2:])

    def use(self, found: tuple[int, tuple[object, ...]]) -> None:
        """use switches to an address `lookup` found, reconnecting if it changed."""
        family, addr = found
        if addr != self._addr or family != self._family:
            self._family = family
            self._addr = addr  # type: ignore[assignment]
            self._reset()  # a stream reconnects to the new address; a datagram socket is rebuilt

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._connected = False
        if self._head_sent:
            # The rest of a half-written packet is useless on a new connection: every line
            # whose newline was not written is lost.
            packet, lines = self._pending.popleft()
            lost = packet[self._head_sent :].count(b"\n")
            self._pending_lines -= lines
            self._drop("send_failed", lost)
            self._head_sent = 0

    def _open(self, now: float) -> bool:
        if self._sock is not None:
            return True
        if self._addr is None or now < self._next_connect:
            return False
        kind = socket.SOCK_STREAM if self.stream else socket.SOCK_DGRAM
        sock = socket.socket(self._family, kind)
        sock.setblocking(False)
        self._sock = sock
        if not self.stream and self._family != socket.AF_UNIX:
            self._connected = True  # UDP: unconnected sendto, so a dead port never errors
            return True
        try:
            code = sock.connect_ex(self._addr)
        except OSError as err:  # e.g. a Unix path that does not exist
            code = err.errno or errno.ECONNREFUSED
        if code in (0, errno.EISCONN):
            self._connected = True
        elif code not in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            self._close_failed(OSError(code, f"statsd connect: {os.strerror(code)}"), now)
            return False
        return True

    def _close_failed(self, err: Exception, now: float) -> None:
        self._fail(err)
        self._reset()
        self._next_connect = now + self._retry_interval

    def _ready(self, now: float) -> bool:
        if not self._open(now):
            return False
        sock = self._sock
        assert sock is not None
        if self._connected:
            return True
        # A non-blocking connect finishes when the socket turns writable.
        _, writable, _ = select.select([], [sock], [], 0)
        if not writable:
            return False
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._close_failed(OSError(code, f"statsd connect: {os.strerror(code)}"), now)
            return False
        self._connected = True
        return True

    # ---- writing

    def drain(self, now: float | None = None) -> None:
        """drain writes queued packets until the socket would block; it never waits."""
        now = time.monotonic() if now is None else now
        if not self._pending or not self._ready(now):
            return
        sock = self._sock
        assert sock is not None
        pending = self._pending
        while pending:
            packet, lines = pending[0]
            try:
                if self.stream:
                    sent = sock.send(memoryview(packet)[self._head_sent :])
                    self._head_sent += sent
                    if self._head_sent < len(packet):
                        return  # the kernel buffer is full: try again on the next drain
                elif self._family == socket.AF_UNIX:
                    sock.send(packet)
                else:
                    sock.sendto(packet, self._addr)  # type: ignore[arg-type]
            except _AGAIN:
                return
            except OSError as err:
                if self.stream or self._family == socket.AF_UNIX:
                    self._close_failed(err, now)
                    return
                # UDP: this datagram is lost (e.g. no route); the socket is fine.
                self._fail(err)
                pending.popleft()
                self._pending_lines -= lines
                self._drop("send_failed", lines)
                continue
            pending.popleft()
            self._pending_lines -= lines
            self._head_sent = 0

    def wait_writable(self, timeout: float) -> bool:
        """wait_writable waits up to *timeout* seconds for the socket to take more bytes.

        It returns False at once when there is no socket to wait for (no address yet, or a
        failed connection waiting for its retry), so a caller's wait loop can stop early.
        """
        sock = self._sock
        if sock is None:
            return False
        select.select([], [sock], [], timeout)
        return True

    def close(self) -> None:
        """close drops what is still queued (counted as ``closed``) and closes the socket."""
        if self._head_sent:
            packet, lines = self._pending.popleft()
            self._pending_lines -= lines
            self._drop("closed", packet[self._head_sent :].count(b"\n"))
            self._head_sent = 0
        for _, lines in self._pending:
            self._drop("closed", lines)
        self._pending.clear()
        self._pending_lines = 0
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._connected = False
