"""kitobs.auth.basic: header parsing, the checks, the hash helper and the refusals' metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import pytest

from kitobs.auth import USER, Unauthenticated, basic
from kitobs.endpoint import context
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from tests.auth.conftest import DURATION, Parts

# Cheap parameters: each check hashes, and the tests make many.
ADA = basic.hash_password("lovelace", n=2**10)
GRACE = basic.hash_password("hopper", algorithm="pbkdf2_sha256", iterations=1000)
USERS = {"ada": ADA, "grace": GRACE}


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def whoami(request: Any) -> str:
    return str(context.current().values[USER])


def call(endpoint: Any, authorization: str | None) -> Any:
    metadata = {} if authorization is None else {"Authorization": authorization}
    with context.scoped(metadata=metadata):
        return endpoint(None)


def test_right_users_reach_the_endpoint_with_their_name(parts: Parts) -> None:
    guarded = basic.middleware(USERS, kit=parts.kit)(whoami)
    assert call(guarded, header("ada", "lovelace")) == "ada"
    assert call(guarded, header("grace", "hopper")) == "grace"
    # Scheme in any case, as RFC 7617 allows.
    assert call(guarded, "bAsIc " + header("ada", "lovelace").split()[1]) == "ada"
    assert parts.failures("basic") == {"missing": 0, "malformed": 0, "invalid": 0}
    assert USER not in context.current().values  # nothing leaks out of the call


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        (header("ada", "wrong"), "invalid"),
        (header("nobody", "lovelace"), "invalid"),
        (header("grace", "lovelace"), "invalid"),  # another user's password
        ("Bearer abc", "malformed"),
        ("Basic", "malformed"),
        ("Basic !!!not-base64!!!", "malformed"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed"),
    ],
)
def test_every_failure_is_the_same_error_counted_by_reason(
    parts: Parts, authorization: str | None, reason: str
) -> None:
    reached = []
    guarded = basic.middleware(USERS, realm="shop", kit=parts.kit)(reached.append)
    with pytest.raises(Unauthenticated) as raised:
        call(guarded, authorization)
    err = raised.value
    assert reached == []
    assert (err.status_code, err.grpc_status, err.outcome) == (
        401,
        "UNAUTHENTICATED",
        "unauthenticated",
    )
    assert err.headers == {"WWW-Authenticate": 'Basic realm="shop", charset="UTF-8"'}
    assert str(err) == "unauthorized"  # the same whatever failed
    assert err.__cause__ is None
    want = {"missing": 0.0, "malformed": 0.0, "invalid": 0.0}
    want[reason] = 1.0
    assert parts.failures("basic") == want


def test_the_credential_is_never_written(parts: Parts) -> None:
    guarded = instrumenting(parts.kit)(basic.middleware(USERS, kit=parts.kit)(whoami))
    for password in ("s3cr3t-wrong", "lovelace"):
        with contextlib.suppress(Unauthenticated):
            call(guarded, header("ada", password))
    text = repr(parts.records) + repr([s.attributes for s in parts.spans.spans])
    text += repr(parts.provider.series(DURATION))
    assert parts.records  # something was written...
    for secret in ("s3cr3t-wrong", "lovelace", header("ada", "lovelace").split()[1]):
        assert secret not in text  # ...but never the credential


def test_refused_calls_are_recorded_as_unauthenticated(parts: Parts) -> None:
    guarded = instrumenting(parts.kit, name="who")(basic.middleware(USERS, kit=parts.kit)(whoami))
    with pytest.raises(Unauthenticated):
        call(guarded, header("ada", "nope"))
    assert call(guarded, header("ada", "lovelace")) == "ada"
    assert (
        len(parts.provider.observations(DURATION, endpoint="who", outcome="unauthenticated")) == 1
    )
    assert len(parts.provider.observations(DURATION, endpoint="who", outcome="success")) == 1


def test_async_endpoints_see_the_user(parts: Parts) -> None:
    async def whoami_async(request: Any) -> str:
        await asyncio.sleep(0)
        return str(context.current().values[USER])

    guarded = basic.middleware(basic.fixed("root", "toor"), kit=parts.kit)(whoami_async)
    assert asyncio.iscoroutinefunction(guarded)

    async def main() -> tuple[str, BaseException | None]:
        with context.scoped(metadata={"authorization": header("root", "toor")}):
            ok = await guarded(None)
        with context.scoped(metadata={"authorization": header("root", "root")}):
            try:
                await guarded(None)
            except Unauthenticated as exc:
                return ok, exc
        return ok, None

    ok, refused = asyncio.run(main())
    assert ok == "root"
    assert isinstance(refused, Unauthenticated)
    assert parts.failures("basic")["invalid"] == 1


def test_fixed_compares_both_fields() -> None:
    check = basic.fixed("admin", "pw")
    assert check("admin", "pw")
    assert not check("admin", "pw2")
    assert not check("admin2", "pw")
    assert not check("", "")


def test_a_callable_check_gets_user_and_password(parts: Parts) -> None:
    seen = []

    def check(user: str, password: str) -> bool:
        seen.append((user, password))
        return password == "pa:ss"  # a colon belongs to the password

    guarded = basic.middleware(check, kit=parts.kit)(whoami)
    assert call(guarded, header("u", "pa:ss")) == "u"
    assert seen == [("u", "pa:ss")]


@pytest.mark.parametrize("algorithm", ["scrypt", "pbkdf2_sha256"])
def test_hash_helper_round_trip(algorithm: str) -> None:
    hashed = basic.hash_password("pässword", algorithm=algorithm, n=2**10, iterations=1000)
    assert hashed.startswith(algorithm + "$")
    assert "pässword" not in hashed
    assert basic.verify_password("pässword", hashed)
    assert not basic.verify_password("password", hashed)
    # Salted: the same password hashes differently each time, and both verify.
    again = basic.hash_password("pässword", algorithm=algorithm, n=2**10, iterations=1000)
    assert again != hashed
    assert basic.verify_password("pässword", again)


def test_default_parameters_are_in_the_string() -> None:
    hashed = basic.hash_password("x", salt="abc")
    algorithm, n, salt, r, p, _ = hashed.split("$")
    assert (algorithm, n, salt, r, p) == ("scrypt", "16384", "abc", "8", "1")
    assert basic.verify_password("x", hashed)
    assert not basic.verify_password("x", hashed.replace("$abc$", "$abd$"))


def test_django_hashes_verify_and_ours_verify_in_django() -> None:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, ScryptPasswordHasher

    theirs = PBKDF2PasswordHasher().encode("secret", "saltsalt", iterations=1000)
    assert basic.verify_password("secret", theirs)
    theirs_scrypt = ScryptPasswordHasher().encode("secret", "saltsalt", n=2**10, r=8, p=1)
    assert basic.verify_password("secret", theirs_scrypt)
    ours = basic.hash_password("secret", algorithm="pbkdf2_sha256", iterations=1000)
    assert PBKDF2PasswordHasher().verify("secret", ours)
    ours_scrypt = basic.hash_password("secret", n=2**10)
    assert ScryptPasswordHasher().verify("secret", ours_scrypt)


@pytest.mark.parametrize(
    "hashed",
    ["", "plain", "md5$1$salt$abc", "scrypt$1000$s$8$1$AAAA", "pbkdf2_sha256$x$s$AAAA",
     "scrypt$1024$s$8$1$not base64!"],
)  # fmt: skip
def test_malformed_hashes_never_match_and_fail_the_build(hashed: str) -> None:
    assert not basic.verify_password("", hashed)
    with pytest.raises(ConfigError, match="user 'ada'") as raised:
        basic.middleware({"ada": hashed})
    if hashed:
        assert hashed not in str(raised.value)  # the hash is not quoted back


def test_bad_arguments_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="empty"):
        basic.middleware({})
    with pytest.raises(ConfigError, match="mapping of users"):
        basic.middleware("ada:lovelace")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="quotes"):
        basic.middleware(USERS, realm='a"b')
    with pytest.raises(ValueError, match="unknown algorithm"):
        basic.hash_password("x", algorithm="md5")
    with pytest.raises(ValueError, match="salt"):
        basic.hash_password("x", salt="a$b")


def test_realm_comes_from_settings_and_the_default_kit(monkeypatch: pytest.MonkeyPatch) -> None:
    from kitobs.kit import reset_default, set_default

    parts = Parts(**{"auth.basic.realm": "from-config"})
    guarded = basic.middleware(USERS)(whoami)  # no Kit: the default, at the first call
    set_default(parts.kit)
    try:
        with pytest.raises(Unauthenticated) as raised:
            call(guarded, None)
    finally:
        reset_default()
    assert raised.value.headers["WWW-Authenticate"].startswith('Basic realm="from-config"')
    assert parts.failures("basic")["missing"] == 1


def test_docstring_examples(parts: Parts) -> None:
    import doctest

    import kitobs.auth

    for module in (kitobs.auth, basic):
        result = doctest.testmod(module, extraglobs={"kit": parts.kit})
        assert result.failed == 0
        assert result.attempted > 0
