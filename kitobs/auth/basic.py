"""basic: HTTP Basic authentication for endpoints, on go-kit's ``auth/basic``.

`middleware` reads ``Authorization: Basic base64(user:password)`` from the request context
(`kitobs.endpoint.context`; the HTTP header, or the gRPC ``authorization`` metadata), checks the
pair, and calls the endpoint with the user name under `kitobs.auth.USER` in the context values.
Anything else raises `kitobs.auth.Unauthenticated` (401, ``WWW-Authenticate: Basic
realm="..."``), one error for every failure mode. The check is one of:

- a mapping of user names to password hashes made by `hash_password` (the standard library's
  ``hashlib.scrypt`` or PBKDF2-HMAC-SHA256, in Django's formats ``scrypt$n$salt$r$p$hash`` and
  ``pbkdf2_sha256$iterations$salt$hash``, so Django's hashes work as they are);
- `fixed`, one user and password, compared as SHA-256 digests in constant time (go-kit's check);
- any callable ``check(user, password) -> bool``.

Example::

    >>> from kitobs.endpoint import context
    >>> from kitobs.auth import USER
    >>> users = {"ada": hash_password("lovelace", n=2**10)}
    >>> def hello(request):
    ...     return "hello " + context.current().values[USER]
    >>> guarded = middleware(users, realm="api", kit=kit)(hello)
    >>> with context.scoped(metadata={"Authorization": "Basic YWRhOmxvdmVsYWNl"}):
    ...     guarded(None)
    'hello ada'

Hashing is meant to be slow: with the default parameters a check takes some tens of
milliseconds of CPU, in the calling thread (for an async endpoint, in the event loop's). A
wrong user costs the same as a wrong password: the password is then checked against another
user's hash, so timing does not tell which users exist.

Refusals are counted in ``kitobs_auth_failures_total{scheme="basic",reason}`` with reason
``missing`` (no ``Authorization``), ``malformed`` (not Basic, bad base64, no colon) or
``invalid`` (wrong user or password).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kitobs.auth import USER
from kitobs.auth._refusals import Bound, Refusals, check_realm
from kitobs.config import BasicAuthSettings, key_name
from kitobs.endpoint import Endpoint, Middleware, around
from kitobs.endpoint.context import attach, current, detach
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["Check", "fixed", "hash_password", "middleware", "verify_password"]

Check = Callable[[str, str], bool]
"""Check tells whether a user and password are right, e.g. ``lambda u, p: ldap.bind(u, p)``."""

#: The reasons a basic refusal is counted under (see `kitobs.contract.AUTH_FAILURE_REASONS`).
_REASONS = ("missing", "malformed", "invalid")
_SCRYPT = "scrypt"
_PBKDF2 = "pbkdf2_sha256"


def hash_password(
    password: str,
    *,
    algorithm: str = _SCRYPT,
    salt: str | None = None,
    n: int = 2**14,
    r: int = 8,
    p: int = 1,
    iterations: int = 1_000_000,
) -> str:
    """hash_password makes a salted hash to store, e.g. ``"scrypt$16384$3f1c...$8$1$pQ..."``.

    *algorithm* is ``"scrypt"`` (``hashlib.scrypt`` with cost *n*, block size *r* and
    parallelism *p*) or ``"pbkdf2_sha256"`` (``hashlib.pbkdf2_hmac`` with *iterations*). The
    salt (random unless given) and the parameters are in the string, in Django's formats, so
    `verify_password` needs nothing else and the cost can be raised later for new hashes.

    Raises:
        ValueError: an unknown algorithm, a salt containing ``$``, or a bad parameter.
    """
    if salt is None:
        salt = secrets.token_hex(16)
    if not salt or "$" in salt:
        raise ValueError("hash_password(): the salt must be non-empty and contain no '$'")
    if algorithm == _SCRYPT:
        derived = _scrypt(password, salt, n, r, p)
        return f"{_SCRYPT}${n}${salt}${r}${p}${base64.b64encode(derived).decode('ascii')}"
    if algorithm == _PBKDF2:
        if iterations < 1:
            raise ValueError("hash_password(): iterations must be at least 1")
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
        return f"{_PBKDF2}${iterations}${salt}${base64.b64encode(derived).decode('ascii')}"
    raise ValueError(
        f"hash_password(): unknown algorithm {algorithm!r}; use {_SCRYPT!r} or {_PBKDF2!r}"
    )


def _scrypt(password: str, salt: str, n: int, r: int, p: int) -> bytes:
    # OpenSSL refuses to use more than maxmem bytes; scrypt needs 128 * r * (n + p + 2), so the
    # bound is computed from the parameters instead of OpenSSL's 32 MiB default.
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(
        password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=maxmem, dklen=64
    )


def _parse_hash(hashed: str) -> Callable[[str], bytes] | None:
    # A function deriving the stored hash's key from a password, or None when it is not one
    # of the two formats.
    parts = hashed.split("$")
    try:
        if parts[0] == _SCRYPT and len(parts) == 6:
            n, salt, r, p = int(parts[1]), parts[2], int(parts[3]), int(parts[4])
            if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt:
                return None
            return lambda password: _scrypt(password, salt, n, r, p)
        if parts[0] == _PBKDF2 and len(parts) == 4:
            iterations, salt2 = int(parts[1]), parts[2]
            if iterations < 1 or not salt2:
                return None
            return lambda password: hashlib.pbkdf2_hmac(
                "sha256", password.encode(), salt2.encode(), iterations
            )
    except ValueError:
        return None
    return None


def _stored(hashed: str) -> bytes | None:
    try:
        return base64.b64decode(hashed.rsplit("$", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_password(password: str, hashed: str) -> bool:
    """verify_password tells whether *password* matches a `hash_password` string.

    The derived keys are compared with `hmac.compare_digest`. A string in neither format is
    never matched.
    """
    derive, want = _parse_hash(hashed), _stored(hashed)
    if derive is None or want is None:
        return False
    return hmac.compare_digest(derive(password), want)


def fixed(user: str, password: str) -> Check:
    """fixed is the check for one user and password, e.g. ``fixed("admin", os.environ["PW"])``.

    As go-kit: the SHA-256 digests of both are compared in constant time, so neither the
    length nor the content of the right ones shows in the time a check takes.
    """
    want_user = hashlib.sha256(user.encode()).digest()
    want_password = hashlib.sha256(password.encode()).digest()

    def check(given_user: str, given_password: str) -> bool:
        user_ok = hmac.compare_digest(hashlib.sha256(given_user.encode()).digest(), want_user)
        password_ok = hmac.compare_digest(
            hashlib.sha256(given_password.encode()).digest(), want_password
        )
        return user_ok & password_ok  # both compared, whatever the first gave

    return check


class _Users:
    # The check of a mapping of users to hashes, each hash parsed once.
    __slots__ = ("_decoy", "_users")

    def __init__(self, users: Mapping[str, str]) -> None:
        parsed: dict[str, tuple[Callable[[str], bytes], bytes]] = {}
        for user, hashed in users.items():
            derive, want = _parse_hash(hashed), _stored(hashed)
            if derive is None or want is None:
                # Name the user, never the hash: it is a secret too.
                raise ConfigError(
                    f"basic.middleware(): the password hash of user {user!r} is not a "
                    "hash_password() string",
                    allowed="scrypt$n$salt$r$p$hash or pbkdf2_sha256$iterations$salt$hash "
                    "(make one with kitobs.auth.basic.hash_password)",
                )
            parsed[user] = (derive, want)
        if not parsed:
            raise ConfigError("basic.middleware(): the mapping of users to hashes is empty")
        self._users = parsed
        # A user that does not exist is checked against this hash, for as long as a real one.
        self._decoy = next(iter(parsed.values()))

    def __call__(self, user: str, password: str) -> bool:
        found = self._users.get(user)
        derive, want = found if found is not None else self._decoy
        matched = hmac.compare_digest(derive(password), want)
        return matched and found is not None


def _credentials(header: Any) -> tuple[str, str] | str:
    # The user and password of an Authorization value, or the reason it has none.
    if not header:
        return "missing"
    scheme, _, encoded = str(header).strip().partition(" ")
    if scheme.lower() != "basic":
        return "malformed"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return "malformed"
    user, colon, password = decoded.partition(":")
    if not colon:
        return "malformed"
    return user, password


class _Basic:
    # What a call needs, bound to the Kit once.
    __slots__ = ("check", "refusals")

    def __init__(self, check: Check, refusals: Refusals) -> None:
        self.check = check
        self.refusals = refusals


def middleware(
    check: Check | Mapping[str, str],
    *,
    realm: str | None = None,
    kit: Kit | None = None,
) -> Middleware:
    """middleware authenticates every call with HTTP Basic, e.g. ``middleware(users, kit=kit)``.

    *check* is a mapping of user names to `hash_password` strings, or a `Check` callable.
    *realm* goes in ``WWW-Authenticate: Basic realm="..."``; by default the Kit's
    ``auth.basic.realm``. *kit* records the refusals; by default the process-wide
    `kitobs.kit.default`, resolved at the first call. Works on sync and async endpoints; the
    user name is ``context.current().values[kitobs.auth.USER]`` inside the endpoint.

    Raises:
        ConfigError: a hash in *check* is not a `hash_password` string, or the realm has a ``"``.
    """
    verify: Check
    if isinstance(check, Mapping):
        verify = _Users(check)
    elif callable(check):
        verify = check
    else:
        raise ConfigError(
            f"basic.middleware(): check must be a mapping of users to password hashes or a "
            f"callable(user, password) -> bool, not {type(check).__name__}"
        )
    if realm is not None:
        check_realm(realm, None)

    def build(kit: Kit) -> _Basic:
        chosen = realm
        if chosen is None:
            chosen = kit.settings.auth.basic.realm
            check_realm(chosen, key_name(BasicAuthSettings, "realm"))
        headers = {"WWW-Authenticate": f'Basic realm="{chosen}", charset="UTF-8"'}
        return _Basic(verify, Refusals(kit, "basic", _REASONS, headers))

    bound = Bound(build, kit)

    def start(request: Any) -> Any:
        state = bound.get()
        ctx = current()
        found = _credentials(ctx.metadata.get("authorization"))
        if isinstance(found, str):
            raise state.refusals.refuse(found)
        user, password = found
        if not state.check(user, password):
            raise state.refusals.refuse("invalid")
        return attach(ctx.derive(values={USER: user}))

    def finish(token: Any, response: Any, exc: BaseException | None) -> None:
        detach(token)

    def wrap(endpoint: Endpoint) -> Endpoint:
        return around(endpoint, start, finish)

    return wrap
