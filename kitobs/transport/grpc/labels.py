"""kitobs.transport.grpc.labels: the label values of the ``rpc_*`` metrics, e.g. `method_label`.

Example::

    >>> method_label("/shop.Cart/Add"), SYSTEM, OTHER_METHOD
    ('shop.Cart/Add', 'grpc', '_OTHER')
"""

from __future__ import annotations

import grpc

from kitobs.contract import OTHER_METHOD

__all__ = ["SYSTEM", "OTHER_METHOD", "SERVER_ERROR_CODES", "method_label"]

#: SYSTEM is the ``rpc_system_name`` label value, ``"grpc"``.
SYSTEM = "grpc"
#: SERVER_ERROR_CODES are the status codes that make a SERVER span an error, e.g. ``UNKNOWN``.
SERVER_ERROR_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def method_label(method: str | bytes) -> str:
    """method_label gives the ``rpc_method`` of a wire path, e.g. ``shop.Cart/Add``.

    Example::

        >>> method_label("/shop.Cart/Add")
        'shop.Cart/Add'
    """
    if isinstance(method, bytes):
        method = method.decode("utf-8", "replace")
    return method[1:] if method.startswith("/") else method
