"""Auth benchmark: one authenticated call, kitobs's middleware against what a user writes by hand.

One process, rows measured in interleaved repeats (the order rotates every repeat), medians of
the repeats, in microseconds per call (CPU time of the calling thread):

- ``bare``: the endpoint called inside a request context holding the credential;
- ``jwt peer``: a hand-written decorator doing the same job with PyJWT directly: read the
  ``authorization`` metadata, split ``Bearer <token>``, ``jwt.decode`` with the algorithm and
  audience pinned, the claims put in the request context for the endpoint;
- ``jwt kitobs``: `kitobs.auth.jwt.parser` around the endpoint (it also reads the header to
  pin the algorithm before the key, and binds the refusal counters up front);
- ``basic peer`` / ``basic kitobs``: the same for HTTP Basic with one fixed user, compared as
  SHA-256 digests with `hmac.compare_digest` (go-kit's check) on both sides.

Both JWT sides verify the same ES256 token with the same key object. Overhead = row - bare;
the ratio is kitobs's overhead over the peer's (goal: <= 1.1, the signature check dominates).

    python benchmarks/bench_auth.py             # a few seconds
    python benchmarks/bench_auth.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from kitobs.auth import basic
from kitobs.auth import jwt as kjwt
from kitobs.config import load
from kitobs.endpoint import context
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import prometheus
from kitobs.tracing._tracer import Tracer

Fn = Callable[[Any], Any]


def endpoint(request: Any) -> Any:
    return request


def jwt_peer(key: Any, fn: Fn) -> Fn:
    def wrapper(request: Any) -> Any:
        value = context.current().metadata.get("authorization") or ""
        parts = value.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise PermissionError("unauthorized")
        try:
            claims = jwt.decode(parts[1], key, algorithms=["ES256"], audience="orders")
        except jwt.PyJWTError:
            raise PermissionError("unauthorized") from None
        with context.scoped(values={"claims": claims}):
            return fn(request)

    return wrapper


def basic_peer(user: str, password: str, fn: Fn) -> Fn:
    want_user = hashlib.sha256(user.encode()).digest()
    want_password = hashlib.sha256(password.encode()).digest()

    def wrapper(request: Any) -> Any:
        value = context.current().metadata.get("authorization") or ""
        scheme, _, encoded = value.partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, ValueError):
            raise PermissionError("unauthorized") from None
        u, _, p = given.partition(":")
        ok_user = hmac.compare_digest(hashlib.sha256(u.encode()).digest(), want_user)
        ok_pass = hmac.compare_digest(hashlib.sha256(p.encode()).digest(), want_password)
        if scheme.lower() != "basic" or not (ok_user & ok_pass):
            raise PermissionError("unauthorized")
        with context.scoped(values={"user": u}):
            return fn(request)

    return wrapper


def measure(fn: Fn, metadata: dict[str, str], number: int) -> float:
    """Microseconds of CPU per call of *fn* inside a request context carrying *metadata*."""
    with context.scoped(metadata=metadata):
        begin = time.thread_time_ns()
        for i in range(number):
            fn(i)
        return (time.thread_time_ns() - begin) / number / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per row per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 calls, 2 repeats")
    args = parser.parse_args()
    number, repeats = (200, 2) if args.quick else (args.number, args.repeats)

    kit = Kit(
        load(path=None, env={}, search=False),
        logger=nop(),
        metrics=prometheus.Provider(),
        tracer=Tracer(),
    )
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    token = jwt.encode(
        {"sub": "billing", "aud": "orders", "exp": int(time.time()) + 3600}, private, "ES256"
    )
    bearer = {"authorization": f"Bearer {token}"}
    credential = {"authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
    rows: dict[str, tuple[Fn, dict[str, str]]] = {
        "bare": (endpoint, bearer),
        "jwt peer": (jwt_peer(public, endpoint), bearer),
        "jwt kitobs": (
            kjwt.parser(public, algorithms=["ES256"], audience="orders", kit=kit)(endpoint),
            bearer,
        ),
        "basic peer": (basic_peer("admin", "secret", endpoint), credential),
        "basic kitobs": (basic.middleware(basic.fixed("admin", "secret"), kit=kit)(endpoint),
                         credential),
    }  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn, metadata = rows[name]
            samples[name].append(measure(fn, metadata, number))
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{number} calls x {repeats} repeats, median us/call (CPU of the calling thread)")
    for name in names:
        print(f"{name:<14} {median[name]:8.2f}")
    for scheme in ("jwt", "basic"):
        ours = median[f"{scheme} kitobs"] - median["bare"]
        theirs = median[f"{scheme} peer"] - median["bare"]
        print(f"{scheme} ratio: kitobs overhead / peer overhead = {ours / theirs:.2f}")
    kit.close()


if __name__ == "__main__":
    main()
