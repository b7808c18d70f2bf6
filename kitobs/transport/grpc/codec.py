"""kitobs.transport.grpc.codec: how `serve_endpoints` and `Client` turn values into messages.

`Codec` is the protocol, `JSONCodec` the default; `DEFAULT_SERVICE` is the service endpoints are
served under when their names have no ``Service/`` part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Protocol

from kitobs.transport.grpc._record import _error_type

__all__ = ["Codec", "JSONCodec", "DEFAULT_SERVICE"]

#: The service endpoints are served under when their names have no ``Service/`` part.
DEFAULT_SERVICE = "kitobs.Endpoints"


def _path(method: str, service: str) -> str:
    return f"/{method}" if "/" in method else f"/{service}/{method}"


def _identity(data: bytes) -> bytes:
    return data


class Codec(Protocol):
    """Codec turns values into message bytes and back, per method, e.g. `JSONCodec`."""

    def encode(self, method: str, value: Any) -> bytes:
        """encode serialises a request or response of *method*, e.g. to JSON bytes."""
        ...

    def decode(self, method: str, data: bytes) -> Any:
        """decode deserialises a message of *method*, e.g. into a request dataclass."""
        ...


class JSONCodec:
    """JSONCodec encodes messages as JSON, e.g. ``JSONCodec(types={"sum": IntRequest})``.

    Encoding turns dataclasses into objects and exceptions (a `kitobs.endpoint.Failer`'s
    business error, say) into ``{"error": "<qualified class>", "message": "..."}``. Decoding
    gives plain JSON values, or, for a method listed in *types*, ``types[method](**object)``.
    Method names are the short ones (``"sum"``) or full ones (``"pkg.Svc/sum"``), as given to
    `serve_endpoints` or `Client.call`.

    Example::

        >>> JSONCodec().decode("sum", JSONCodec().encode("sum", {"a": 1}))
        {'a': 1}
    """

    __slots__ = ("_types",)

    def __init__(self, types: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._types = dict(types or {})

    def encode(self, method: str, value: Any) -> bytes:
        """encode serialises *value* as compact JSON."""
        return json.dumps(value, default=_jsonable, separators=(",", ":")).encode()

    def decode(self, method: str, data: bytes) -> Any:
        """decode parses JSON, building ``types[method]`` from an object when listed."""
        value = json.loads(data) if data else None
        make = self._types.get(method)
        if make is not None and isinstance(value, dict):
            return make(**value)
        return value


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, BaseException):
        return {"error": _error_type(value), "message": str(value)}
    raise TypeError(f"{type(value).__qualname__} is not JSON serialisable")
