"""kitobs.auth.jwt with static keys and key functions: pinned algorithms, claims, attack tokens."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest

from kitobs.auth import CLAIMS, Unauthenticated
from kitobs.auth import jwt as kjwt
from kitobs.contract import AUTH_FAILURE_REASONS
from kitobs.endpoint import context
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from tests.auth.conftest import DURATION, Parts
from tests.auth.keys import (
    EC_PRIVATE,
    EC_PUBLIC,
    OTHER_RSA_PRIVATE,
    RSA_PRIVATE,
    RSA_PUBLIC,
    RSA_PUBLIC_PEM,
    forged,
    token,
)

HMAC_SECRET = b"k" * 32  # PyJWT refuses HS256 secrets shorter than the hash


def claims_of(request: Any) -> dict[str, Any]:
    return dict(context.current().values[CLAIMS])


def call(endpoint: Any, authorization: str | None) -> Any:
    metadata = {} if authorization is None else {"authorization": authorization}
    with context.scoped(metadata=metadata):
        return endpoint(None)


def refused(parts: Parts, endpoint: Any, authorization: str | None) -> str:
    """The one reason a refused call was counted under."""
    before = parts.failures("bearer")
    with pytest.raises(Unauthenticated) as raised:
        call(endpoint, authorization)
    err = raised.value
    assert (err.status_code, err.grpc_status, err.outcome) == (
        401,
        "UNAUTHENTICATED",
        "unauthenticated",
    )
    assert err.headers["WWW-Authenticate"].startswith("Bearer")
    assert str(err) == "unauthorized"
    assert err.__context__ is None
    after = parts.failures("bearer")
    grown = [reason for reason in after if after[reason] != before.get(reason, 0)]
    assert len(grown) == 1
    assert after[grown[0]] - before.get(grown[0], 0) == 1
    return grown[0]


@pytest.fixture
def rs256(parts: Parts) -> Any:
    return kjwt.parser(RSA_PUBLIC_PEM, algorithms=["RS256"], audience="orders", kit=parts.kit)(
        claims_of
    )


def test_every_reason_starts_at_zero(parts: Parts) -> None:
    kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=parts.kit)
    assert parts.failures("bearer") == dict.fromkeys(AUTH_FAILURE_REASONS, 0.0)


def test_a_valid_rs256_token_gives_its_claims(parts: Parts, rs256: Any) -> None:
    got = call(rs256, "Bearer " + token({"sub": "ada", "aud": "orders"}))
    assert got["sub"] == "ada"
    assert got["aud"] == "orders"
    assert call(rs256, "bearer " + token({"sub": "b", "aud": ["x", "orders"]}))["sub"] == "b"
    assert set(parts.failures("bearer").values()) == {0.0}


def test_es256_through_a_key_function_by_kid(parts: Parts) -> None:
    keys = {"ec-1": EC_PUBLIC}
    seen: list[Any] = []

    def key_for(header: Any) -> Any:
        seen.append(dict(header))
        return keys[header["kid"]]  # a KeyError refuses the token

    guarded = kjwt.parser(key_for, algorithms=["ES256"], kit=parts.kit)(claims_of)
    good = token({"sub": "grace"}, EC_PRIVATE, "ES256", kid="ec-1")
    assert call(guarded, f"Bearer {good}")["sub"] == "grace"
    assert seen[0]["kid"] == "ec-1"
    assert seen[0]["alg"] == "ES256"
    unknown = token({"sub": "grace"}, EC_PRIVATE, "ES256", kid="ec-2")
    assert refused(parts, guarded, f"Bearer {unknown}") == "invalid"


def test_claims_are_read_only_and_gone_after_the_call(parts: Parts) -> None:
    def mutate(request: Any) -> None:
        context.current().values[CLAIMS]["sub"] = "mallory"

    guarded = kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=parts.kit)(mutate)
    with pytest.raises(TypeError):
        call(guarded, "Bearer " + token({"sub": "ada"}))
    assert CLAIMS not in context.current().values


def test_alg_none_is_refused(parts: Parts, rs256: Any) -> None:
    unsigned = forged({"alg": "none", "typ": "JWT"}, {"sub": "root", "aud": "orders"}, None)
    assert refused(parts, rs256, f"Bearer {unsigned}") == "unexpected_alg"
    none_upper = forged({"alg": "None"}, {"sub": "root", "aud": "orders"}, None)
    assert refused(parts, rs256, f"Bearer {none_upper}") == "unexpected_alg"


def test_hs256_signed_with_the_rsa_public_key_is_refused(parts: Parts, rs256: Any) -> None:
    # The classic key confusion: the attacker knows the public key and uses it as an HMAC secret.
    confused = forged(
        {"alg": "HS256", "typ": "JWT"}, {"sub": "root", "aud": "orders"}, RSA_PUBLIC_PEM
    )
    assert refused(parts, rs256, f"Bearer {confused}") == "unexpected_alg"
    # Even a key function handing back the PEM for an HS token could not be fooled: the
    # algorithms cannot mix HMAC with public-key ones.
    with pytest.raises(ConfigError, match="HMAC"):
        kjwt.parser(RSA_PUBLIC_PEM, algorithms=["RS256", "HS256"], kit=parts.kit)
    with pytest.raises(ConfigError, match="not a key for HS256"):
        kjwt.parser(RSA_PUBLIC_PEM, algorithms=["HS256"], kit=parts.kit)


def test_a_token_naming_another_allowed_family_member_is_refused(parts: Parts, rs256: Any) -> None:
    other = token({"aud": "orders"}, RSA_PRIVATE, "RS384")
    assert refused(parts, rs256, f"Bearer {other}") == "unexpected_alg"


def test_expiry_and_not_before_with_leeway(parts: Parts) -> None:
    now = int(time.time())
    strict = kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=parts.kit)(claims_of)
    lenient = kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], leeway=120, kit=parts.kit)(claims_of)
    expired = token({"exp": now - 60})
    assert refused(parts, strict, f"Bearer {expired}") == "expired"
    assert call(lenient, f"Bearer {expired}")["exp"] == now - 60
    assert refused(parts, lenient, "Bearer " + token({"exp": now - 600})) == "expired"
    early = token({"nbf": now + 60})
    assert refused(parts, strict, f"Bearer {early}") == "not_active"
    assert call(lenient, f"Bearer {early}")["nbf"] == now + 60
    assert refused(parts, strict, "Bearer " + token({"iat": now + 600})) == "not_active"


def test_audience_issuer_and_required_claims(parts: Parts) -> None:
    guarded = kjwt.parser(
        RSA_PUBLIC, algorithms=["RS256"], audience=["orders", "billing"],
        issuer="https://idp.test/", required_claims=["exp", "sub"], kit=parts.kit,
    )(claims_of)  # fmt: skip
    good = {"aud": "billing", "iss": "https://idp.test/", "sub": "ada"}
    assert call(guarded, "Bearer " + token(good))["sub"] == "ada"
    for bad in (
        {**good, "aud": "shipping"},
        {k: v for k, v in good.items() if k != "aud"},
        {**good, "iss": "https://evil.test/"},
        {k: v for k, v in good.items() if k != "sub"},
    ):
        assert refused(parts, guarded, "Bearer " + token(bad)) == "invalid"
    no_exp = jwt.encode(good, RSA_PRIVATE, algorithm="RS256")
    assert refused(parts, guarded, f"Bearer {no_exp}") == "invalid"


def test_no_audience_configured_refuses_a_token_with_one(parts: Parts) -> None:
    guarded = kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=parts.kit)(claims_of)
    assert refused(parts, guarded, "Bearer " + token({"aud": "someone-else"})) == "invalid"


def test_bad_signatures_are_invalid(parts: Parts, rs256: Any) -> None:
    other = token({"aud": "orders"}, OTHER_RSA_PRIVATE)
    assert refused(parts, rs256, f"Bearer {other}") == "invalid"
    good = token({"aud": "orders"})
    head, _body, signature = good.split(".")
    tampered = ".".join((head, token({"aud": "orders", "sub": "root"}).split(".")[1], signature))
    assert refused(parts, rs256, f"Bearer {tampered}") == "invalid"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "malformed"),
        ("Basic YWRhOmxvdmVsYWNl", "malformed"),
        ("Bearer a b", "malformed"),
        ("Bearer not-a-token", "malformed"),
        ("Bearer a.b.c", "malformed"),
    ],
)
def test_missing_and_malformed(
    parts: Parts, rs256: Any, authorization: str | None, reason: str
) -> None:
    assert refused(parts, rs256, authorization) == reason


def test_bearer_token_glue() -> None:
    assert kjwt.bearer_token("Bearer abc") == "abc"
    assert kjwt.bearer_token("BEARER abc") == "abc"
    assert kjwt.bearer_token("  bearer   abc ") == "abc"
    for value in (None, "", "Bearer", "Bearer a b", "Basic abc", "abc"):
        assert kjwt.bearer_token(value) is None


def test_hmac_tokens(parts: Parts) -> None:
    guarded = kjwt.parser(HMAC_SECRET, algorithms=["HS256"], kit=parts.kit)(claims_of)
    assert call(guarded, "Bearer " + token({"sub": "s"}, HMAC_SECRET, "HS256"))["sub"] == "s"
    wrong = token({"sub": "s"}, b"x" * 32, "HS256")
    assert refused(parts, guarded, f"Bearer {wrong}") == "invalid"
    with pytest.raises(ConfigError, match="too short"):
        kjwt.parser(b"short", algorithms=["HS256"], kit=parts.kit)


@pytest.mark.parametrize(
    ("algorithms", "match"),
    [([], "list the algorithms"), (["none"], "never allowed"), (["NONE"], "never allowed"),
     (["rs256"], "PyJWT knows"), (["HS256", "ES256"], "HMAC")],
)  # fmt: skip
def test_algorithms_are_checked_at_build(parts: Parts, algorithms: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        kjwt.parser(RSA_PUBLIC, algorithms=algorithms, kit=parts.kit)


def test_settings_configure_the_parser() -> None:
    parts = Parts(**{
        "auth.jwt.algorithms": ["ES256"], "auth.jwt.audience": ["api"],
        "auth.jwt.issuer": "https://idp.test/", "auth.jwt.realm": "api", "auth.jwt.leeway": 30,
    })  # fmt: skip
    guarded = kjwt.parser(EC_PUBLIC, kit=parts.kit)(claims_of)
    good = {"aud": "api", "iss": "https://idp.test/", "exp": int(time.time()) - 10}
    assert call(guarded, "Bearer " + token(good, EC_PRIVATE, "ES256"))["aud"] == "api"
    with pytest.raises(Unauthenticated) as raised:
        call(guarded, "Bearer " + token({**good, "aud": "other"}, EC_PRIVATE, "ES256"))
    assert raised.value.headers == {"WWW-Authenticate": 'Bearer realm="api"'}
    rs = token(good, RSA_PRIVATE, "RS256")
    assert refused(parts, guarded, f"Bearer {rs}") == "unexpected_alg"


def test_settings_come_from_the_environment() -> None:
    from kitobs.config import load

    settings = load(
        path=None,
        search=False,
        env={
            "KITOBS_AUTH_JWT_ALGORITHMS": "RS256,ES256",
            "KITOBS_AUTH_JWT_AUDIENCE": "a,b",
            "KITOBS_AUTH_JWT_LEEWAY": "5",
            "KITOBS_AUTH_BASIC_REALM": "shop",
        },
    )
    assert settings.auth.jwt.algorithms == ("RS256", "ES256")  # case kept: PyJWT's names
    assert settings.auth.jwt.audience == ("a", "b")
    assert settings.auth.jwt.leeway == 5.0
    assert settings.auth.jwt.required_claims == ("exp",)
    assert settings.auth.basic.realm == "shop"


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"auth\.jwt\.algorithms"):
        kjwt.parser(RSA_PUBLIC, kit=Parts().kit)
    with pytest.raises(ConfigError, match=r"auth\.jwt\.jwks_url"):
        kjwt.parser(algorithms=["RS256"], kit=Parts().kit)
    with pytest.raises(ConfigError, match=r"auth\.jwt\.algorithms"):
        kjwt.parser(RSA_PUBLIC, kit=Parts(**{"auth.jwt.algorithms": ["none"]}).kit)


def test_the_token_is_never_written(parts: Parts, rs256: Any) -> None:
    guarded = instrumenting(parts.kit, name="orders")(rs256)
    good = token({"aud": "orders", "sub": "ada"})
    bad = token({"aud": "nobody"})
    call(guarded, f"Bearer {good}")
    with pytest.raises(Unauthenticated):
        call(guarded, f"Bearer {bad}")
    assert (
        len(parts.provider.observations(DURATION, endpoint="orders", outcome="unauthenticated"))
        == 1
    )
    assert len(parts.provider.observations(DURATION, endpoint="orders", outcome="success")) == 1
    text = repr(parts.records) + repr([(s.attributes, s.events) for s in parts.spans.spans])
    assert parts.records
    for secret in (good, bad, good.split(".")[2], bad.split(".")[1]):
        assert secret not in text


def test_async_endpoints(parts: Parts) -> None:
    async def handler(request: Any) -> str:
        await asyncio.sleep(0)
        return str(context.current().values[CLAIMS]["sub"])

    guarded = kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=parts.kit)(handler)
    assert asyncio.iscoroutinefunction(guarded)

    async def main() -> str:
        with context.scoped(metadata={"authorization": "Bearer " + token({"sub": "ada"})}):
            return await guarded(None)

    assert asyncio.run(main()) == "ada"


def test_signer_puts_a_verifiable_token_in_the_outgoing_metadata(parts: Parts) -> None:
    def outgoing(request: Any) -> str:
        return str(context.current().values[context.OUTGOING_METADATA]["authorization"])

    sign = kjwt.signer(EC_PRIVATE, "ES256", lambda: {"sub": "svc"}, kid="ec-1", lifetime=60)
    with context.scoped(values={context.OUTGOING_METADATA: {"x-request-id": "r1"}}):
        header_value = sign(outgoing)(None)
        assert context.current().values[context.OUTGOING_METADATA] == {"x-request-id": "r1"}
    assert header_value.startswith("Bearer ")
    minted = header_value.split()[1]
    assert jwt.get_unverified_header(minted)["kid"] == "ec-1"
    verify = kjwt.parser(EC_PUBLIC, algorithms=["ES256"], kit=parts.kit)(claims_of)
    got = call(verify, header_value)
    assert got["sub"] == "svc"
    assert got["exp"] - got["iat"] == 60
    with pytest.raises(ConfigError, match="never allowed"):
        kjwt.signer(RSA_PRIVATE, "none")
    with pytest.raises(ConfigError, match="not a key for ES256"):
        kjwt.signer(RSA_PRIVATE, "ES256")


def test_basic_imports_without_pyjwt_and_jwt_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['jwt'] = None\n"
        "import kitobs.auth.basic\n"
        "try:\n"
        "    import kitobs.auth.jwt\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'kitobs[jwt]'" in done.stdout


def test_realms_are_checked() -> None:
    with pytest.raises(ConfigError, match="quotes"):
        kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], realm='a"b', kit=Parts().kit)
    with pytest.raises(ConfigError, match=r"auth\.jwt\.realm"):
        kjwt.parser(RSA_PUBLIC, algorithms=["RS256"], kit=Parts(**{"auth.jwt.realm": "a\nb"}).kit)
    from kitobs.auth import basic

    with pytest.raises(ConfigError, match=r"auth\.basic\.realm"):
        basic.middleware(basic.fixed("a", "b"), kit=Parts(**{"auth.basic.realm": "a\\b"}).kit)
