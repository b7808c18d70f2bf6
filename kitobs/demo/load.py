"""The demo's load generator: calls the demo's own routes at a steady rate, through kitobs'
instrumented HTTP client and, when the demo serves gRPC, its instrumented gRPC client, so client
metrics and CLIENT spans appear too.

HTTP calls go through circuit breakers (`kitobs.demo.guards.client_breakers`): a 5xx answer is a
failure, so ``/flaky``'s failures open ``demo-flaky`` now and then. ``/sum`` and ``/concat`` are
reached through service discovery, as a client finds a service it calls: a static Instancer
(the demo's own address) feeds an Endpointer whose factory builds one breaker-wrapped endpoint
per instance, balanced round robin with ``retry`` (three attempts within two seconds), so the
discovery row of the dashboards moves. ``/admin`` is called with
right and wrong Basic credentials, ``/whoami`` with a token signed per call
(`kitobs.auth.jwt.signer`), with none and with a malformed one, so the auth failure counters move.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from kitobs import sd
from kitobs.demo import guards
from kitobs.demo.service import IntRequest, TextRequest
from kitobs.endpoint import Endpoint, RequestError
from kitobs.kit import Kit
from kitobs.transport.httpclient import HTTPXTransport

__all__ = ["LoadGenerator", "ServerError"]


class ServerError(Exception):
    """ServerError is a 5xx answer, raised so that the client's breaker counts it as a failure."""


@dataclass(frozen=True, slots=True)
class _Call:
    path: str
    auth: tuple[str, str] | None = None
    headers: dict[str, str] | None = None
    signed: bool = False


_PATHS = (
    _Call("/sum?a=1&b=2"),
    _Call("/concat?a=kit&b=obs"),
    _Call("/flaky"),
    _Call("/sum?a=1000000&b=1"),
    _Call("/slow?ms=30"),
    _Call("/flaky"),
    _Call("/sum?a=x"),
    _Call("/no/such/route"),
    _Call("/admin", auth=("demo", "demo")),
    _Call("/flaky"),
    _Call("/whoami", signed=True),
    _Call("/admin", auth=("demo", "wrong")),
    _Call("/flaky"),
    _Call("/whoami"),
    _Call("/whoami", headers={"Authorization": "Bearer not-a-token"}),
)
_GRPC_CALLS: tuple[tuple[str, Any], ...] = (
    ("sum", IntRequest(2, 3)),
    ("concat", TextRequest("g", "rpc")),
    ("flaky", None),
    ("sum", IntRequest(1_000_000, 1)),
    ("nope", None),
)


class LoadGenerator:
    """LoadGenerator sends *rate* requests per second to *url* from a background thread."""

    def __init__(
        self,
        kit: Kit,
        url: str,
        rate: float,
        grpc_target: str | None = None,
        key: guards.SigningKey | None = None,
        *,
        relay: bool = False,
    ) -> None:
        self._kit = kit
        # /relay is served only when the demo reaches NATS.
        self._paths = (*_PATHS, _Call("/relay?a=2&b=3")) if relay else _PATHS
        self._grpc: Any = None
        if grpc_target is not None:
            from kitobs.demo.grpc import grpc_client

            self._grpc = grpc_client(kit, grpc_target)
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=url,
            timeout=5.0,
            transport=HTTPXTransport(httpx.HTTPTransport(), kit.metrics, tracer=kit.tracer),
        )
        self._thread = threading.Thread(target=self._run, name="kitobs-demo-load", daemon=True)
        breakers = guards.client_breakers(kit)
        self._flaky: Endpoint = breakers["flaky"](self._get)
        self._api: Endpoint = breakers["api"](self._get)
        host, _, port = url.removeprefix("http://").rpartition(":")
        self._instancer = sd.StaticInstancer(
            [sd.Instance(host, int(port))], service="demo-http", kit=kit
        )
        self._endpointer: sd.Endpointer[Endpoint] = sd.Endpointer(
            self._instancer, self._instance_endpoint, kit=kit
        )
        self._discovered: Endpoint = sd.retry(
            sd.RoundRobin(self._endpointer.endpoints),
            3,
            2.0,
            service="demo-http",
            instance_of=self._endpointer.instance_of,
            kit=kit,
        )
        self._signed: Endpoint | None = None
        if key is not None:
            from kitobs.auth import jwt

            sign = jwt.signer(
                key.private,
                "ES256",
                {"sub": "demo-load", "aud": guards.AUDIENCE},
                kid=guards.KID,
                lifetime=60.0,
            )
            self._signed = sign(self._api)

    def start(self) -> None:
        """start begins sending."""
        self._thread.start()

    def stop(self) -> None:
        """stop stops sending, waits for the request in flight and closes the client."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._client.close()
        self._endpointer.close()
        self._instancer.stop()
        if self._grpc is not None:
            self._grpc.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        grpc_calls = itertools.cycle(_GRPC_CALLS)
        paths = itertools.cycle(self._paths)
        for n in itertools.count():
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at = max(next_at + self._interval, time.monotonic() - 1.0)
            if self._grpc is not None and n % 3 == 2:
                self._call_grpc(*next(grpc_calls))
                continue
            path = next(paths)  # every HTTP call in turn, whatever share goes to gRPC
            if path.signed and self._signed is None:
                continue  # no JWT support installed: /whoami is not served
            call = self._flaky if path.path == "/flaky" else self._api
            if path.path.startswith(("/sum", "/concat")):
                call = self._discovered
            if path.signed and self._signed is not None:
                call = self._signed
            try:
                call(path)
            except (ServerError, RequestError, sd.RetryError):
                pass  # a 5xx, a refused call or one whose attempts all failed: all recorded
            except httpx.HTTPError as err:
                self._kit.logger.log("msg", "demo load request failed", "error", repr(err))

    def _instance_endpoint(self, instance: sd.Instance) -> tuple[Endpoint, None]:
        # One endpoint per discovered instance, behind its own breaker, as go-kit advises.
        base = f"http://{instance.address}:{instance.port}"
        breaker = guards.instance_breaker(self._kit, instance)

        def get(call: _Call) -> httpx.Response:
            response = self._client.get(base + call.path, auth=call.auth, headers=call.headers)
            if response.status_code >= 500:
                raise ServerError(f"{call.path} answered {response.status_code}")
            return response

        return breaker(get), None

    def _get(self, call: _Call) -> httpx.Response:
        response = self._client.get(call.path, auth=call.auth, headers=call.headers)
        if response.status_code >= 500:
            raise ServerError(f"{call.path} answered {response.status_code}")
        return response

    def _call_grpc(self, method: str, request: Any) -> None:
        import grpc

        # Errors are part of the demo's traffic; the interceptor has recorded them.
        with contextlib.suppress(grpc.RpcError):
            self._grpc.call(method, request)
