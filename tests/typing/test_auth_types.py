"""Type checks only (mypy): the auth middlewares are endpoint middlewares, their checks Checks."""

from __future__ import annotations

from kitobs.auth import Unauthenticated, basic
from kitobs.auth import jwt as kjwt
from kitobs.endpoint import Middleware, RequestError
from kitobs.kit import Kit


def _basic_users(kit: Kit) -> Middleware:
    return basic.middleware({"ada": basic.hash_password("x")}, realm="api", kit=kit)


def _basic_check() -> Middleware:
    check: basic.Check = basic.fixed("ada", "x")
    return basic.middleware(check)


def _parser(keys: kjwt.JWKS) -> Middleware:
    return kjwt.parser(keys, algorithms=["RS256"], audience=["a", "b"], leeway=5.0)


def _key_function(func: kjwt.KeyFunc) -> Middleware:
    return kjwt.parser(func, algorithms=("ES256",), issuer="https://idp/")


def _signer(key: bytes) -> Middleware:
    return kjwt.signer(key, "HS256", lambda: {"sub": "svc"}, kid="k", lifetime=60.0)


def _error() -> RequestError:
    return Unauthenticated(headers={"WWW-Authenticate": "Bearer"})


def _token(value: str | None) -> str | None:
    return kjwt.bearer_token(value)
