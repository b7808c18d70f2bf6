"""The demo's gRPC side: the same endpoints served with `kitobs.transport.grpc`, when grpcio is
installed (``kitobs[grpc]``)."""

from __future__ import annotations

from typing import Any

from kitobs.demo.service import IntRequest, SlowRequest, TextRequest, make_endpoints
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from kitobs.kit import Kit

__all__ = ["REQUEST_TYPES", "grpc_client", "start_grpc"]

#: How the gRPC codec builds each endpoint's request from JSON.
REQUEST_TYPES: dict[str, Any] = {"sum": IntRequest, "concat": TextRequest, "slow": SlowRequest}


def start_grpc(kit: Kit, host: str, port: int) -> Any:
    """start_grpc serves the demo's endpoints over gRPC and returns the running server.

    Returns None, after logging why, when grpcio is not installed or the port cannot be bound:
    the demo then runs over HTTP alone.
    """
    try:
        from kitobs.transport import grpc as kgrpc
    except ImportError:
        kit.logger.log("msg", "gRPC disabled: grpcio is not installed (pip install kitobs[grpc])")
        return None
    instrumented = instrumenting(kit)
    endpoints = {name: instrumented(ep) for name, ep in make_endpoints().items()}
    try:
        return kgrpc.serve_endpoints(
            endpoints, kit, host=host, port=port, codec=kgrpc.JSONCodec(types=REQUEST_TYPES)
        )
    except ConfigError as err:
        kit.logger.log("msg", "gRPC disabled", "error", str(err))
        return None


def grpc_client(kit: Kit, target: str) -> Any:
    """grpc_client returns an instrumented client of the demo's gRPC service at *target*."""
    from kitobs.transport import grpc as kgrpc

    return kgrpc.Client(target, kit, timeout=5.0)
