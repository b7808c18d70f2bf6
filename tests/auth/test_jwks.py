"""kitobs.auth.jwt.JWKS against a real key set server on loopback: fetching in the background,
keeping the last good keys when the server goes down, and bounding refetches for unknown kids."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kitobs.auth import CLAIMS, Unauthenticated
from kitobs.auth import jwt as kjwt
from kitobs.endpoint import context
from kitobs.errors import ConfigError
from tests.auth.conftest import Parts
from tests.auth.keys import (
    EC_PRIVATE,
    EC_PUBLIC,
    OTHER_RSA_PRIVATE,
    RSA_PRIVATE,
    RSA_PUBLIC,
    JWKSServer,
    eventually,
    forged,
    jwk,
    token,
)

REFRESHES = "kitobs_auth_jwks_refreshes"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[JWKSServer]:
    srv = JWKSServer([jwk(RSA_PUBLIC, "rsa-1", "RS256"), jwk(EC_PUBLIC, "ec-1", "ES256")])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks(server: JWKSServer, parts: Parts, clock: Clock) -> Iterator[kjwt.JWKS]:
    # Hour-long intervals: every fetch after the first is one the test caused.
    keys = kjwt.JWKS(
        server.url, refresh_interval=3600, refetch_interval=30, timeout=2, kit=parts.kit
    )
    keys._clock = clock
    try:
        assert keys.wait(10)
        yield keys
    finally:
        keys.close()


def claims_of(request: Any) -> dict[str, Any]:
    return dict(context.current().values[CLAIMS])


def call(endpoint: Any, value: str) -> Any:
    with context.scoped(metadata={"authorization": f"Bearer {value}"}):
        return endpoint(None)


def refreshes(parts: Parts) -> dict[str, float]:
    return {r: parts.provider.value(REFRESHES, result=r) for r in ("success", "failure")}


def test_keys_come_from_the_server_and_outlive_it(
    parts: Parts, server: JWKSServer, jwks: kjwt.JWKS, clock: Clock
) -> None:
    guarded = kjwt.parser(jwks, algorithms=["RS256", "ES256"], kit=parts.kit)(claims_of)
    assert call(guarded, token({"sub": "a"}, kid="rsa-1"))["sub"] == "a"
    assert call(guarded, token({"sub": "e"}, EC_PRIVATE, "ES256", kid="ec-1"))["sub"] == "e"
    assert server.hits == 1
    assert refreshes(parts) == {"success": 1, "failure": 0}

    server.stop()  # the identity provider goes down
    assert jwks.refresh() is False
    assert refreshes(parts) == {"success": 1, "failure": 1}
    warned = [r for r in parts.records if r.get("level") == "warn"]
    assert len(warned) == 1
    assert warned[0]["url"] == server.url
    assert warned[0]["error"] == "URLError"
    assert warned[0]["keys"] == 2
    # The last good keys are kept (PyJWT's own client would have dropped them).
    assert call(guarded, token({"sub": "still"}, kid="rsa-1"))["sub"] == "still"
    assert parts.failures("bearer")["invalid"] == 0
    # A background fetch (an unknown kid, a refetch interval later) fails the same way.
    clock.now += 31
    with pytest.raises(Unauthenticated):
        call(guarded, token({}, kid="rotated"))
    assert eventually(lambda: refreshes(parts)["failure"] == 2)
    assert call(guarded, token({"sub": "again"}, kid="rsa-1"))["sub"] == "again"
    assert refreshes(parts)["success"] == 1


def test_series_start_at_zero(parts: Parts, server: JWKSServer) -> None:
    keys = kjwt.JWKS(server.url, refresh_interval=3600, kit=parts.kit)
    try:
        assert keys.wait(10)
        assert {s["result"] for s in parts.provider.series(REFRESHES)} == {"success", "failure"}
        assert refreshes(parts) == {"success": 1, "failure": 0}
    finally:
        keys.close()


def test_an_unknown_kid_flood_refetches_at_most_once_per_interval(
    parts: Parts, server: JWKSServer, jwks: kjwt.JWKS, clock: Clock
) -> None:
    guarded = kjwt.parser(jwks, algorithms=["RS256"], kit=parts.kit)(claims_of)
    clock.now += 31  # a refetch interval since the first fetch
    for _ in range(50):
        with pytest.raises(Unauthenticated):
            call(guarded, token({}, kid=str(uuid.uuid4())))
    assert eventually(lambda: refreshes(parts)["success"] == 2)  # fetched, and done
    assert server.hits == 2
    assert parts.failures("bearer")["invalid"] == 50
    # A key the provider publishes now is not fetched again within the interval...
    server.keys = [*server.keys, jwk(OTHER_RSA_PRIVATE.public_key(), "rsa-2", "RS256")]
    clock.now += 10
    rotated = token({"sub": "new"}, OTHER_RSA_PRIVATE, kid="rsa-2")
    for _ in range(50):
        with pytest.raises(Unauthenticated):
            call(guarded, rotated)
    assert not jwks._wake.is_set()  # no fetch was asked for
    assert server.hits == 2
    # ...but once the interval is over, one more unknown kid brings it in.
    clock.now += 21
    with pytest.raises(Unauthenticated):
        call(guarded, rotated)  # refused: no request waits for the fetch
    assert eventually(lambda: server.hits == 3)
    assert eventually(lambda: refreshes(parts)["success"] == 3)
    assert call(guarded, rotated)["sub"] == "new"
    assert server.hits == 3


def test_a_slow_fetch_blocks_no_request(
    parts: Parts, server: JWKSServer, jwks: kjwt.JWKS, clock: Clock
) -> None:
    guarded = kjwt.parser(jwks, algorithms=["RS256"], kit=parts.kit)(claims_of)
    gate = threading.Event()
    server.gate = gate  # every fetch now hangs until the gate opens
    try:
        clock.now += 31
        with pytest.raises(Unauthenticated):
            call(guarded, token({}, kid="unknown"))
        assert eventually(lambda: server.hits == 2)  # the fetch is under way, and hanging
        # Requests with known keys are served meanwhile.
        assert call(guarded, token({"sub": "a"}, kid="rsa-1"))["sub"] == "a"
    finally:
        gate.set()
    assert eventually(lambda: refreshes(parts)["success"] == 2)


def test_key_types_are_bound_to_the_token_algorithm(
    parts: Parts, server: JWKSServer, jwks: kjwt.JWKS
) -> None:
    guarded = kjwt.parser(jwks, algorithms=["RS256", "ES256", "PS256"], kit=parts.kit)(claims_of)
    # An ES256 token naming the RSA key, and an RSA key declared RS256 asked for PS256.
    wrong_type = token({}, EC_PRIVATE, "ES256", kid="rsa-1")
    wrong_alg = token({}, RSA_PRIVATE, "PS256", kid="rsa-1")
    for value in (wrong_type, wrong_alg):
        with pytest.raises(Unauthenticated):
            call(guarded, value)
    assert parts.failures("bearer")["invalid"] == 2
    confused = forged({"alg": "HS256", "kid": "rsa-1"}, {}, b"anything")
    with pytest.raises(Unauthenticated):
        call(guarded, confused)
    assert parts.failures("bearer")["unexpected_alg"] == 1
    with pytest.raises(ConfigError, match="HS"):
        kjwt.parser(jwks, algorithms=["HS256"], kit=parts.kit)


def test_a_one_key_set_serves_tokens_without_kid(parts: Parts, clock: Clock) -> None:
    srv = JWKSServer([{k: v for k, v in jwk(RSA_PUBLIC, "x", "RS256").items() if k != "kid"}])
    keys = kjwt.JWKS(srv.url, refresh_interval=3600, kit=parts.kit)
    try:
        assert keys.wait(10)
        guarded = kjwt.parser(keys, algorithms=["RS256"], kit=parts.kit)(claims_of)
        assert call(guarded, token({"sub": "k"}))["sub"] == "k"
    finally:
        keys.close()
        srv.stop()


def test_a_server_that_never_answered_refuses_and_counts(parts: Parts) -> None:
    srv = JWKSServer([])  # an empty set is a failed fetch too
    keys = kjwt.JWKS(srv.url, refresh_interval=3600, kit=parts.kit)
    try:
        assert not keys.wait(0.0)
        assert eventually(lambda: refreshes(parts)["failure"] == 1)
        guarded = kjwt.parser(keys, algorithms=["RS256"], kit=parts.kit)(claims_of)
        with pytest.raises(Unauthenticated):
            call(guarded, token({}, kid="rsa-1"))
        assert parts.failures("bearer")["invalid"] == 1
    finally:
        keys.close()
        srv.stop()


def test_the_jwks_url_setting_builds_the_key_set(server: JWKSServer) -> None:
    parts = Parts(**{"auth.jwt.jwks_url": server.url, "auth.jwt.algorithms": ["RS256"],
                     "auth.jwt.jwks_refresh_interval": 3600})  # fmt: skip
    guarded = kjwt.parser(kit=parts.kit)(claims_of)
    # The first call starts the fetching and, finding no key yet, may be refused.
    with contextlib.suppress(Unauthenticated):
        call(guarded, token({}, kid="rsa-1"))
    assert eventually(lambda: refreshes(parts)["success"] == 1)
    assert call(guarded, token({"sub": "cfg"}, kid="rsa-1"))["sub"] == "cfg"


def test_bad_jwks_arguments() -> None:
    with pytest.raises(ConfigError, match="http"):
        kjwt.JWKS("file:///etc/passwd")
    with pytest.raises(ConfigError, match="refresh_interval"):
        kjwt.JWKS("https://idp.test/jwks", refresh_interval=0)


def test_an_oversized_key_set_is_a_failed_fetch(parts: Parts) -> None:
    huge = {**jwk(RSA_PUBLIC, "rsa-1", "RS256"), "padding": "x" * (1 << 20)}
    srv = JWKSServer([huge])
    keys = kjwt.JWKS(srv.url, refresh_interval=3600, kit=parts.kit)
    try:
        assert keys.refresh() is False
        srv.keys = [jwk(RSA_PUBLIC, "rsa-1", "RS256")]
        assert keys.refresh() is True
        assert refreshes(parts) == {"success": 1, "failure": 1}
    finally:
        keys.close()
        srv.stop()
