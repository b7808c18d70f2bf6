"""The request context: a request's deadline, cancellation and metadata, on `contextvars`.

go-kit hands a ``context.Context`` to every endpoint and middleware; kitobs keeps the endpoint a
callable of one request and puts the same facts in a context variable instead. The server
transports fill it for every request they serve (`kitobs.transport.wsgi`, ``asgi``, ``flask``,
``starlette``, ``django`` and the gRPC server interceptors), and the client transports read it
(`kitobs.transport.httpclient`, the gRPC client interceptors), so a deadline set on the way in
bounds every call made on the way out. An endpoint, or a middleware around it, reads it with
`current`::

    >>> from kitobs.endpoint import context
    >>> def whoami(request):
    ...     ctx = context.current()
    ...     return ctx.metadata.get("authorization"), ctx.values.get("user")
    >>> def authenticate(next_endpoint):
    ...     def endpoint(request):
    ...         token = context.current().metadata.get("authorization", "")
    ...         with context.scoped(values={"user": token.removeprefix("Bearer ")}):
    ...             return next_endpoint(request)
    ...     return endpoint
    >>> with context.scoped(metadata={"Authorization": "Bearer ada"}, timeout=5.0):
    ...     authenticate(whoami)(None)
    ('Bearer ada', 'ada')
    >>> context.current().values.get("user") is None   # nothing leaks out of the scope
    True

A `RequestContext` is immutable. `scoped` runs a block with a derived one: its *values* are added
to the current ones, its deadline can only move earlier, and on leaving the block the previous
context is current again. The variable follows `contextvars` rules, so one request's context is
never seen by another: each thread a WSGI server runs a request in, and each asyncio task, has its
own. Async code gets the same context (asyncio copies it into each task, ``asyncio.to_thread``
and Starlette's thread pool copy it into the thread).

What each field holds:

- ``deadline``: a `time.monotonic` timestamp after which the caller stops waiting, or None.
  `time_remaining` gives the seconds left. HTTP servers set one when built with ``timeout=``;
  gRPC servers take the client's (``grpc-timeout``). Client transports shorten their timeouts to
  it, and an HTTP client refuses to send once it has passed (`DeadlineExceeded`).
- ``cancelled``: a `Cancellation`, set when the caller is gone (a gRPC call that ended or was
  cancelled, an ASGI ``http.disconnect``). Sync code polls ``is_set()`` or blocks in
  ``wait(timeout)``; async code is also cancelled the asyncio way, by its task being cancelled.
- ``metadata``: the incoming HTTP headers or gRPC metadata, read-only and case-insensitive
  (``metadata["Authorization"]`` and ``metadata["authorization"]`` are the same). Binary gRPC
  entries (``-bin`` keys) are left out.
- ``values``: what middleware added for inner endpoints, e.g. auth claims; read-only.

One value is read by the client transports: under `OUTGOING_METADATA`, a mapping of headers
(gRPC metadata) that every request sent from within the scope carries, e.g. the
``authorization`` a client-side auth middleware (`kitobs.auth.jwt.signer`) adds. A header the
request already has is left as it is.

The HTTP server transports hand the variable a `Pending` instead of a built context: the
context is made on the first `current` of the request and is the same object afterwards, so a
request nobody asks about costs no context.

Outside any request `current` gives `BACKGROUND`: no deadline, no metadata, never cancelled.
This module needs only the standard library.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, cast

__all__ = [
    "BACKGROUND",
    "Cancellation",
    "DeadlineExceeded",
    "LazyMetadata",
    "Metadata",
    "NO_VALUES",
    "OUTGOING_METADATA",
    "Pending",
    "RequestContext",
    "attach",
    "current",
    "detach",
    "from_fields",
    "held",
    "scoped",
    "time_remaining",
]

_NO_VALUES: Mapping[str, Any] = types.MappingProxyType({})
# One lock for all lazily made events: taken only by set() and a blocking wait(), never per request.
_LOCK = threading.Lock()


class DeadlineExceeded(TimeoutError):
    """DeadlineExceeded is raised by a client transport asked to send after the deadline passed.

    Example: ``DeadlineExceeded("GET http://api/users")``; the message says how late it is.
    Nothing was sent.
    """


class Cancellation:
    """Cancellation is a request's "the caller is gone" signal, e.g. ``ctx.cancelled.is_set()``.

    Like `threading.Event` (``is_set``, ``set``, ``wait``), but its event is only made when a
    thread blocks in `wait`, so a request that never waits costs one small object.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        """is_set tells whether the request was cancelled, e.g. to stop a long loop early."""
        return self._set

    def set(self) -> None:
        """set marks the request cancelled and wakes every `wait`; transports call it."""
        with _LOCK:
            self._set = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """wait blocks until the request is cancelled or *timeout* seconds pass; True if it was."""
        if self._set:
            return True
        with _LOCK:
            if self.is_set():  # set() may have run since the first look
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(timeout)


class Metadata(Mapping[str, str]):
    """Metadata is a read-only, case-insensitive mapping of headers, e.g. ``m["Content-Type"]``.

    Built from ``(name, value)`` pairs or a mapping; a repeated name keeps its first value.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        found: dict[str, str] = {}
        for name, value in pairs:
            found.setdefault(name.lower(), value)
        self._items = found

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        """get returns header *name* (any case) or *default*, e.g. ``get("authorization")``."""
        return self._items.get(name.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Metadata({self._items!r})"


_NO_METADATA: Mapping[str, str] = Metadata()


class LazyMetadata(Mapping[str, str]):
    """LazyMetadata is `Metadata` decoded on first read, e.g. a request's headers.

    A transport subclasses it with ``__init__`` keeping its source and `pairs` reading the
    ``(name, value)`` pairs from it: most requests never read their metadata, so they never pay
    for decoding it.
    """

    __slots__ = ("_decoded",)

    _decoded: Metadata | None

    def pairs(self) -> Iterable[tuple[str, str]]:
        """pairs gives the ``(name, value)`` pairs, read once, on the first look-up."""
        raise NotImplementedError

    def _items(self) -> Metadata:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = Metadata(self.pairs())
        return decoded

    def __getitem__(self, name: str) -> str:
        return self._items()[name]

    def get(self, name: str, default: Any = None) -> Any:
        """get returns header *name* (any case) or *default*, e.g. ``get("authorization")``."""
        return self._items().get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


class _Never(Cancellation):
    # The default for contexts built without one (BACKGROUND among them): a set() there would
    # cancel every such context at once, so it is ignored.
    __slots__ = ()

    def set(self) -> None:
        pass


_NEVER = _Never()


class RequestContext(NamedTuple):
    """RequestContext is one request's deadline, cancellation, metadata and values.

    Example: ``RequestContext(deadline=time.monotonic() + 2.0, metadata=Metadata(headers))``.
    Immutable; `derive` (or `scoped`) makes a changed copy.
    """

    deadline: float | None = None
    """deadline is the `time.monotonic` time the caller stops waiting, or None for none."""
    cancelled: Cancellation = _NEVER
    """cancelled is set when the caller went away; shared by every context derived from it.
    The default is never set (and ignores `Cancellation.set`)."""
    metadata: Mapping[str, str] = _NO_METADATA
    """metadata holds the incoming headers or gRPC metadata, case-insensitive, read-only."""
    values: Mapping[str, Any] = _NO_VALUES
    """values holds what middleware added for inner endpoints, e.g. ``{"claims": {...}}``."""

    def derive(
        self,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> RequestContext:
        """derive gives a copy with changes, e.g. ``ctx.derive(values={"user": "ada"})``.

        *deadline* (monotonic) and *timeout* (seconds from now) only ever move the deadline
        earlier. *values* are added to this context's (a key given again is replaced).
        *metadata*, given, replaces the metadata.
        """
        new_deadline = self.deadline
        if timeout is not None:
            by_timeout = time.monotonic() + timeout
            deadline = by_timeout if deadline is None else min(deadline, by_timeout)
        if deadline is not None and (new_deadline is None or deadline < new_deadline):
            new_deadline = deadline
        new_values = self.values
        if values:
            new_values = types.MappingProxyType({**self.values, **values})
        new_metadata = self.metadata
        if metadata is not None:
            new_metadata = metadata if isinstance(metadata, Metadata) else Metadata(metadata)
        return RequestContext(new_deadline, self.cancelled, new_metadata, new_values)

    def time_remaining(self) -> float | None:
        """time_remaining gives the seconds until the deadline (0.0 once passed), or None."""
        deadline = self.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())


BACKGROUND = RequestContext()
"""BACKGROUND is the context outside any request: no deadline, no metadata, never cancelled."""

# Called with the four fields as one tuple, e.g. ``from_fields((None, Cancellation(), headers,
# NO_VALUES))``: tuple.__new__ in C, where RequestContext(...) runs a Python-level __new__. The
# server transports build one context per request this way (about 0.25 us less each).
_Fields = tuple[float | None, Cancellation, Mapping[str, str], Mapping[str, Any]]
from_fields = cast(
    "Callable[[_Fields], RequestContext]", functools.partial(tuple.__new__, RequestContext)
)
"""from_fields builds a `RequestContext` from ``(deadline, cancelled, metadata, values)``."""
NO_VALUES = _NO_VALUES
"""NO_VALUES is the empty, read-only ``values`` of a context no middleware added to."""

OUTGOING_METADATA = "kitobs.outgoing_metadata"
"""OUTGOING_METADATA is the values key of headers every client request in scope carries.

E.g. ``scoped(values={OUTGOING_METADATA: {"authorization": "Bearer ..."}})``: the HTTP client
transports (`kitobs.transport.httpclient`) add each as a header and the gRPC client
interceptors as (lowercased) metadata, unless the request already has one of that name."""

Pending = tuple[Callable[[Any], RequestContext], Any]
"""Pending is a server transport's context not built yet: ``(build, request)``.

``build(request)`` makes the `RequestContext` when `current` is first called in the request, and
gives that same object on every later call (it keeps it in the request, e.g. the environ), so a
request nobody asks about costs no context at all."""

_CURRENT: contextvars.ContextVar[RequestContext | Pending] = contextvars.ContextVar(
    "kitobs.request_context", default=BACKGROUND
)
_held = _CURRENT.get


def current() -> RequestContext:
    """current gives the request context in effect, e.g. ``current().metadata["authorization"]``."""
    ctx = _held()
    if isinstance(ctx, RequestContext):
        return ctx
    return ctx[0](ctx[1])  # a transport's Pending: built on first use


def time_remaining() -> float | None:
    """time_remaining gives the current request's seconds left (0.0 once passed), or None."""
    deadline = current().deadline
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


# The transports' per-request calls, bound once: no Python frame between them and the variable.
attach = _CURRENT.set
"""attach makes a context (or a `Pending`) current and returns the token for `detach`.

E.g. ``t = attach(ctx)``. Transports use it around the application; `scoped` is the form for
everyone else."""
detach = _CURRENT.reset
"""detach makes the context before the matching `attach` current again, e.g. ``detach(t)``."""
held = _held
"""held gives what the last `attach` set, a `RequestContext` or a `Pending`, without building it.

Transports use it to see that an outer transport already gave the request a context."""


@contextlib.contextmanager
def scoped(
    *,
    deadline: float | None = None,
    timeout: float | None = None,
    metadata: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> Iterator[RequestContext]:
    """scoped runs a block with a derived context, e.g. ``with scoped(values={"user": u}):``.

    The arguments are those of `RequestContext.derive`, applied to `current`. Inner code (and
    the client calls it makes) sees the derived context; the caller, other threads and other
    tasks never do. Yields the derived context.
    """
    ctx = current().derive(deadline=deadline, timeout=timeout, metadata=metadata, values=values)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
