"""The demo's toolkit middleware: auth, rate limits and circuit breakers, as a user wires them.

Server side, every route runs behind the ``demo-api`` erroring rate limiter (a refused call is a
429 with ``Retry-After``), ``/slow`` also behind the ``demo-slow`` delaying limiter (calls wait
for their token, up to a second), ``/admin`` needs HTTP Basic credentials (``demo``/``demo``)
and ``/whoami`` a bearer JWT signed with the demo's own ES256 key, which the demo publishes at
``/.well-known/jwks.json`` and reads back through `kitobs.auth.jwt.JWKS`, as a service reads its
identity provider's keys. Client side, the load generator calls through circuit breakers:
``demo-flaky`` around ``/flaky`` (two 5xx answers in a row open it for five seconds, which the
endpoint's one-in-ten failures do now and then) and ``demo-api`` around the other routes.

JWT needs PyJWT with cryptography (``kitobs[jwt]``); without it ``/whoami`` is left out and
the demo says so at warn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kitobs.auth import CLAIMS, USER, basic
from kitobs.circuitbreaker import Breaker
from kitobs.endpoint import Endpoint, Middleware, chain, context
from kitobs.ratelimit import Limiter, delaying, erroring

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = [
    "AUDIENCE",
    "KID",
    "ServerGuards",
    "SigningKey",
    "admin",
    "client_breakers",
    "instance_breaker",
    "signing_key",
    "whoami",
]

#: The ``aud`` of the demo's tokens.
AUDIENCE = "kitobs-demo"
#: The ``kid`` of the demo's signing key in its JWKS.
KID = "demo-es256"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """SigningKey is the demo's ES256 key pair: the private key signs, the JWKS publishes."""

    private: Any
    jwks: bytes


def signing_key() -> SigningKey | None:
    """signing_key makes a fresh ES256 key pair, or None without PyJWT and cryptography."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm
    except ImportError:
        return None
    private = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    public.update({"kid": KID, "use": "sig", "alg": "ES256"})
    return SigningKey(private, json.dumps({"keys": [public]}).encode())


class ServerGuards:
    """ServerGuards are the middleware the demo's routes run behind, built once per server."""

    def __init__(self, kit: Kit, base_url: str, key: SigningKey | None) -> None:
        self.api: Middleware = erroring(Limiter("demo-api", rate=200.0, burst=100, kit=kit))
        self.slow: Middleware = delaying(
            Limiter("demo-slow", rate=4.0, burst=2, kit=kit), max_wait=1.0
        )
        self.admin: Middleware = basic.middleware(basic.fixed("demo", "demo"), kit=kit)
        self.bearer: Middleware | None = None
        if key is None:
            kit.logger.log(
                "level",
                "warn",
                "msg",
                "demo /whoami disabled: JWT needs PyJWT and cryptography (pip install kitobs[jwt])",
            )
            return
        from kitobs.auth import jwt

        keys = jwt.JWKS(
            f"{base_url}/.well-known/jwks.json",
            refresh_interval=30.0,
            refetch_interval=5.0,
            timeout=2.0,
            kit=kit,
        )
        self.bearer = jwt.parser(keys, algorithms=["ES256"], audience=AUDIENCE, kit=kit)

    def guard(self, path: str, endpoint: Endpoint) -> Endpoint:
        """guard wraps the endpoint of *path* in the middleware that route runs behind."""
        if path == "/slow":
            return chain(self.api, self.slow)(endpoint)
        return self.api(endpoint)


def _identity() -> dict[str, Any]:
    values = context.current().values
    claims = values.get(CLAIMS)
    return {"user": values.get(USER), "sub": claims.get("sub") if claims else None}


def admin(request: Any) -> dict[str, Any]:
    """admin answers with the Basic user the request was authenticated as."""
    return _identity()


def whoami(request: Any) -> dict[str, Any]:
    """whoami answers with the ``sub`` of the request's bearer token."""
    return _identity()


def instance_breaker(kit: Kit, instance: Any) -> Breaker:
    """instance_breaker is the breaker of one discovered instance, named after its address."""
    return Breaker(
        f"demo-http-{instance.address}-{instance.port}",
        consecutive_failures=5,
        open_timeout=5.0,
        kit=kit,
    )


def client_breakers(kit: Kit) -> dict[str, Breaker]:
    """client_breakers are the load generator's breakers: ``flaky`` and the ``api`` rest."""
    return {
        "flaky": Breaker("demo-flaky", consecutive_failures=2, open_timeout=5.0, kit=kit),
        "api": Breaker("demo-api", consecutive_failures=5, open_timeout=5.0, kit=kit),
    }
