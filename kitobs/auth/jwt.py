"""jwt: JSON Web Token bearer authentication for endpoints, on go-kit's ``auth/jwt`` and PyJWT.

Server side, `parser` takes the token from the request context's ``authorization`` metadata
(``Authorization: Bearer <token>`` over HTTP, the ``authorization`` metadata over gRPC: the
scheme in any case, exactly two parts, see `bearer_token`), verifies it, and calls the endpoint
with its claims under `kitobs.auth.CLAIMS` in the context values::

    verify = parser(JWKS("https://idp.example/.well-known/jwks.json", kit=kit),
                    algorithms=["RS256"], audience="orders", issuer="https://idp.example/",
                    kit=kit)
    @verify
    def get_order(request):
        subject = context.current().values[CLAIMS]["sub"]

Verification is pinned by the caller: the algorithms are given (never ``none``; HMAC and
public-key algorithms cannot be mixed, so a public key is never taken for an HMAC secret), and
a token whose header names another algorithm is refused before any key is looked at. Expiry
(``exp``, required by default), not-before (``nbf``) and issued-at (``iat``) are checked with
*leeway* seconds of clock skew; *audience* and *issuer*, given, must match.

The keys are a static key, a key function of the token's (unverified) header, or a `JWKS`: an
identity provider's key set, fetched in a background thread and refreshed every
*refresh_interval* seconds. A failed refresh keeps the last good keys (and is counted in
``kitobs_auth_jwks_refreshes_total{result="failure"}``); a token whose ``kid`` is unknown
triggers one early fetch at most every *refetch_interval* seconds, so tokens with forged
``kid``\\ s cannot hammer the provider. No request waits for a fetch: a token signed with a key
published since the last fetch is refused until the fetch it triggered has completed.

Client side, `signer` signs claims for every call and puts ``authorization: Bearer <token>``
in the request context's outgoing metadata (`kitobs.endpoint.context.OUTGOING_METADATA`), which
the HTTP client transports send as a header and the gRPC client interceptors as metadata.

A refused token raises `kitobs.auth.Unauthenticated` (401 with ``WWW-Authenticate: Bearer``,
gRPC ``UNAUTHENTICATED``) and is counted in ``kitobs_auth_failures_total{scheme="bearer",
reason}``: ``missing``, ``malformed``, ``expired``, ``not_active``, ``invalid`` (bad signature,
unknown key, wrong audience or issuer, a required claim missing) or ``unexpected_alg``.

Needs PyJWT with cryptography: ``pip install 'kitobs[jwt]'``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import threading
import time
import types
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    import jwt as _pyjwt
    from jwt import algorithms as _algorithms
except ImportError as missing:  # pragma: no cover - the extra is installed in the test venv
    raise ImportError(
        "kitobs.auth.jwt needs PyJWT with cryptography: pip install 'kitobs[jwt]'"
    ) from missing

from kitobs import contract
from kitobs.auth import CLAIMS
from kitobs.auth._refusals import Bound, Refusals, check_realm
from kitobs.config import JwtAuthSettings, key_name
from kitobs.endpoint import Endpoint, Middleware, around
from kitobs.endpoint.context import OUTGOING_METADATA, attach, current, detach
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter

__all__ = ["JWKS", "KeyFunc", "bearer_token", "parser", "signer"]

KeyFunc = Callable[[Mapping[str, Any]], Any]
"""KeyFunc gives the verification key for a token's header, e.g. ``keys[header["kid"]]``; None
(or a `LookupError`) when there is none, which refuses the token."""

_REASONS = contract.AUTH_FAILURE_REASONS
_HMAC = frozenset({"HS256", "HS384", "HS512"})
#: The largest key set document read: a real one is a few KiB.
_MAX_JWKS = 1 << 20


def bearer_token(value: str | None) -> str | None:
    """bearer_token gives the token of an ``Authorization`` value, e.g. ``"abc"`` for
    ``"Bearer abc"``; None unless it is the ``Bearer`` scheme (in any case) and one token."""
    if not value:
        return None
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def _check_algorithms(algorithms: Sequence[str], from_settings: bool) -> tuple[str, ...]:
    where = key_name(JwtAuthSettings, "algorithms") if from_settings else None
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    chosen = tuple(algorithms)
    known = sorted(_algorithms.get_default_algorithms())
    if not chosen:
        raise ConfigError(
            "list the algorithms tokens are signed with (none are accepted otherwise)",
            key=where,
            allowed=[a for a in known if a != "none"],
        )
    for alg in chosen:
        if alg.lower() == "none":
            raise ConfigError(
                "the none algorithm accepts unsigned tokens and is never allowed",
                key=where,
                value=alg,
            )
        if alg in _algorithms.requires_cryptography and not _algorithms.has_crypto:
            raise ConfigError(  # pragma: no cover - cryptography is in the jwt extra
                f"{alg} needs the cryptography package: pip install 'kitobs[jwt]'",
                key=where,
                value=alg,
            )
        if alg not in known:
            raise ConfigError(
                "is not an algorithm PyJWT knows (names are case-sensitive)",
                key=where,
                value=alg,
                allowed=[a for a in known if a != "none"],
            )
    hmac_algs = [a for a in chosen if a in _HMAC]
    if hmac_algs and len(hmac_algs) != len(chosen):
        raise ConfigError(
            "HMAC (HS*) and public-key algorithms cannot be allowed together: a public key "
            "would then verify HMAC tokens anyone can sign with it",
            key=where,
            value=list(chosen),
        )
    return chosen


def _prepare(key: Any, algorithm: str, what: str) -> Any:
    # Parse a PEM or a secret once, here, and check it suits the algorithm (PyJWT refuses a
    # PEM public key as an HMAC secret, and a short HMAC secret is refused outright).
    try:
        alg = _pyjwt.get_algorithm_by_name(algorithm)
        prepared = alg.prepare_key(key)
    except Exception as exc:
        raise ConfigError(
            f"{what} is not a key for {algorithm}: {type(exc).__name__}: {exc}"
        ) from None
    short = alg.check_key_length(prepared)
    if short:
        raise ConfigError(f"{what} is too short for {algorithm}: {short}")
    return prepared


class JWKS:
    """JWKS is an identity provider's JSON Web Key Set, kept fresh, e.g. ``JWKS(url, kit=kit)``.

    Fetched in a background thread (started at the first look-up, or by `wait`) and every
    *refresh_interval* seconds after; a fetch that fails, times out (*timeout* seconds) or
    gives no usable key keeps the keys already held. A look-up of an unknown ``kid`` wakes the
    thread for one early fetch, at most once per *refetch_interval* seconds, and returns None
    without waiting for it. Fetches are counted in ``kitobs_auth_jwks_refreshes_total{result}``
    on *kit* (by default `kitobs.kit.default`, at the first fetch). Keys meant for encryption
    (``"use": "enc"``) are left out. `close` stops the thread.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float = 300.0,
        refetch_interval: float = 30.0,
        timeout: float = 5.0,
        kit: Kit | None = None,
    ) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(
                "the JWKS URL must be an http(s) URL",
                key=key_name(JwtAuthSettings, "jwks_url"),
                value=url,
            )
        for name, value, low in (
            ("refresh_interval", refresh_interval, 1e-3),
            ("refetch_interval", refetch_interval, 0.0),
            ("timeout", timeout, 1e-3),
        ):
            if not math.isfinite(value) or value < low:
                raise ConfigError(f"JWKS(): {name} must be a number of seconds >= {low:g}")
        self.url = url
        self.refresh_interval = refresh_interval
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self._keys: dict[str, Mapping[str, Any]] = {}
        self._prepared: dict[tuple[str, str], _pyjwt.PyJWK] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._loaded = threading.Event()
        self._closed = False
        self._last_fetch = -math.inf
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._clock = time.monotonic  # replaced in tests
        parts = urllib.parse.urlsplit(url)
        # What log lines show of the URL: no user, password, query or fragment.
        port = f":{parts.port}" if parts.port else ""
        self._shown_url = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        self._counters = Bound(_refresh_counters, kit)

    def _ensure_started(self) -> None:
        # Started lazily and again in a forked child (a thread does not survive a fork).
        if self._pid == os.getpid() or self._closed:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._counters.get()  # resolve the Kit in the caller's thread
            self._pid = os.getpid()
            self._wake = threading.Event()
            self._last_fetch = self._clock()
            thread = threading.Thread(target=self._run, name="kitobs-jwks", daemon=True)
            self._thread = thread
        thread.start()

    def _run(self) -> None:
        wake = self._wake
        while not self._closed:
            self.refresh()
            wake.wait(self.refresh_interval)
            wake.clear()

    def refresh(self) -> bool:
        """refresh fetches the key set now, in the calling thread; True when it gave keys.

        On failure the keys held are kept. Never raises.
        """
        success, failure, warn = self._counters.get()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                body = response.read(_MAX_JWKS + 1)
            if len(body) > _MAX_JWKS:
                raise ValueError("the key set is larger than 1 MiB")
            document = json.loads(body)
            found: dict[str, Mapping[str, Any]] = {}
            for entry in document["keys"]:
                if isinstance(entry, dict) and entry.get("kty") and entry.get("use") != "enc":
                    kid = entry.get("kid")
                    found[kid if isinstance(kid, str) else ""] = entry
            if not found:
                raise ValueError("the key set has no signing key")
        except Exception as exc:
            # Only the error's type: its text may quote the provider's answer.
            with contextlib.suppress(Exception):  # recording never raises
                failure.add(1)
                warn(
                    "msg", "JWKS fetch failed, keeping the keys held", "url", self._shown_url,
                    "error", type(exc).__qualname__, "keys", len(self._keys),
                )  # fmt: skip
            return False
        with self._lock:
            self._keys = found
            self._prepared = {}
        with contextlib.suppress(Exception):  # recording never raises
            success.add(1)
        self._loaded.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """wait starts the fetching and blocks until keys are held or *timeout* seconds pass.

        E.g. ``jwks.wait(5)`` in ``main()`` so the first requests find the keys. True if held.
        """
        self._ensure_started()
        return self._loaded.wait(timeout)

    def key(self, kid: str | None, algorithm: str) -> _pyjwt.PyJWK | None:
        """key gives the key *kid* names, bound to *algorithm*, or None (unknown, or unfit).

        A token without ``kid`` gets the only key of a one-key set. An unknown *kid* triggers
        an early fetch, at most once per ``refetch_interval``.
        """
        self._ensure_started()
        keys = self._keys
        if kid is None:
            entry = next(iter(keys.values())) if len(keys) == 1 else None
            kid = ""
        else:
            entry = keys.get(kid)
        if entry is None:
            self._refetch()
            return None
        cached = self._prepared.get((kid, algorithm))
        if cached is not None:
            return cached
        declared = entry.get("alg")
        if declared is not None and declared != algorithm:
            return None
        try:
            # Bound to the token's algorithm: PyJWT builds it from the key type, so an RSA key
            # cannot be turned into an HMAC secret, and verifies only with that algorithm.
            prepared = _pyjwt.PyJWK(dict(entry), algorithm=algorithm)
        except Exception:
            return None
        self._prepared[(kid, algorithm)] = prepared
        return prepared

    def _refetch(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last_fetch < self.refetch_interval:
                return
            self._last_fetch = now
        self._wake.set()

    def close(self) -> None:
        """close stops the background fetching; the keys held stay usable."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 1.0)


def _refresh_counters(kit: Kit) -> tuple[Counter, Counter, Callable[..., None]]:
    family = kit.metrics.declare(contract.AUTH_JWKS_REFRESHES)
    success, failure = family.labels("success"), family.labels("failure")
    success.add(0)  # both series exist from the start, for dashboards
    failure.add(0)
    return success, failure, kit.logger.warn


class _Verifier:
    # Everything a call needs, bound to the Kit once.
    __slots__ = ("_keys", "algorithms", "audience", "issuer", "leeway", "options", "refusals")

    def __init__(
        self,
        keys: Callable[[Mapping[str, Any], str], Any],
        algorithms: tuple[str, ...],
        audience: str | list[str] | None,
        issuer: str | None,
        leeway: float,
        required: list[str],
        refusals: Refusals,
    ) -> None:
        self._keys = keys
        self.algorithms = frozenset(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.options: Any = {"require": required}
        self.refusals = refusals

    def verify(self, value: str | None) -> dict[str, Any]:
        reason = self._reason_or_claims(value)
        if isinstance(reason, str):
            # Raised here, outside the handler: PyJWT's exception, whose text may describe the
            # token, is not chained to what the caller sees.
            raise self.refusals.refuse(reason)
        return reason

    def _reason_or_claims(self, value: str | None) -> str | dict[str, Any]:
        if not value:
            return "missing"
        token = bearer_token(value)
        if token is None:
            return "malformed"
        header = _header(token)
        if header is None:
            return "malformed"
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return "unexpected_alg"
        try:
            key = self._keys(header, alg)
        except LookupError:
            key = None
        if key is None:
            return "invalid"
        try:
            claims: dict[str, Any] = _pyjwt.decode(
                token,
                key,
                algorithms=[alg],
                options=self.options,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except _pyjwt.ExpiredSignatureError:
            return "expired"
        except _pyjwt.ImmatureSignatureError:
            return "not_active"
        except _pyjwt.InvalidAlgorithmError:
            return "unexpected_alg"
        except _pyjwt.InvalidSignatureError:
            return "invalid"
        except _pyjwt.DecodeError:
            return "malformed"
        except _pyjwt.PyJWTError:
            return "invalid"
        return claims


def _header(token: str) -> dict[str, Any] | None:
    # The token's header, unverified, read to pick the algorithm and the key: a quarter of the
    # cost of PyJWT's get_unverified_header. PyJWT parses it again when verifying, with only
    # the algorithm read here allowed, so a header read differently here is refused there.
    head, dot, _ = token.partition(".")
    if not dot:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return header if isinstance(header, dict) else None


def _key_source(keys: Any, algorithms: tuple[str, ...]) -> Callable[[Mapping[str, Any], str], Any]:
    if isinstance(keys, JWKS):
        if any(a in _HMAC for a in algorithms):
            raise ConfigError("jwt.parser(): a JWKS holds public keys; HS* algorithms need a key")
        jwks = keys

        def from_jwks(header: Mapping[str, Any], alg: str) -> Any:
            kid = header.get("kid")
            return jwks.key(kid if isinstance(kid, str) else None, alg)

        return from_jwks
    if callable(keys) and not isinstance(keys, str | bytes):
        func: KeyFunc = keys

        def from_func(header: Mapping[str, Any], alg: str) -> Any:
            return func(header)

        return from_func
    # A static key: parsed once per algorithm family, checked against every allowed algorithm.
    prepared = {alg: _prepare(keys, alg, "jwt.parser(): the key") for alg in algorithms}

    def static(header: Mapping[str, Any], alg: str) -> Any:
        return prepared[alg]

    return static


def parser(
    keys: Any = None,
    *,
    algorithms: Sequence[str] | None = None,
    audience: str | Sequence[str] | None = None,
    issuer: str | None = None,
    leeway: float | None = None,
    required_claims: Sequence[str] | None = None,
    realm: str | None = None,
    kit: Kit | None = None,
) -> Middleware:
    """parser verifies every call's bearer token, e.g. ``parser(jwks, algorithms=["RS256"])``.

    *keys* is a key (a PEM string or bytes, a cryptography key object, an HMAC secret of at
    least the hash's size), a `KeyFunc`, or a `JWKS`; None uses ``auth.jwt.jwks_url``. Each
    option left None comes from the Kit's ``[auth.jwt]`` settings. *audience* may list several
    accepted values. Claims reach the endpoint, read-only, as
    ``context.current().values[kitobs.auth.CLAIMS]``. *kit* records the refusals; by default
    `kitobs.kit.default`, resolved (with the settings) at the first call.

    Raises:
        ConfigError: no algorithms, ``none``, HS* mixed with others, a key unfit for an
            algorithm, or neither keys nor ``auth.jwt.jwks_url``.
    """
    early: tuple[str, ...] | None = None
    if algorithms is not None:
        early = _check_algorithms(algorithms, False)
    # A key given with the algorithms is checked now, whatever the Kit.
    early_keys = _key_source(keys, early) if keys is not None and early is not None else None

    def build(kit: Kit) -> _Verifier:
        settings = kit.settings.auth.jwt
        chosen = early if early is not None else _check_algorithms(settings.algorithms, True)
        source = early_keys
        if source is None:
            given = keys
            if given is None:
                if not settings.jwks_url:
                    raise ConfigError(
                        "jwt.parser() got no keys: pass a key, a key function or a JWKS, "
                        "or set the identity provider's key set URL",
                        key=key_name(JwtAuthSettings, "jwks_url"),
                    )
                given = JWKS(
                    settings.jwks_url,
                    refresh_interval=settings.jwks_refresh_interval,
                    refetch_interval=settings.jwks_refetch_interval,
                    timeout=settings.jwks_timeout,
                    kit=kit,
                )
            source = _key_source(given, chosen)
        aud = audience if audience is not None else settings.audience
        accepted: str | list[str] | None = aud if isinstance(aud, str) else list(aud) or None
        chosen_realm = realm if realm is not None else settings.realm
        check_realm(chosen_realm, None if realm is not None else key_name(JwtAuthSettings, "realm"))
        challenge = f'Bearer realm="{chosen_realm}"' if chosen_realm else "Bearer"
        return _Verifier(
            source,
            chosen,
            accepted,
            issuer if issuer is not None else (settings.issuer or None),
            leeway if leeway is not None else settings.leeway,
            list(required_claims if required_claims is not None else settings.required_claims),
            Refusals(kit, "bearer", _REASONS, {"WWW-Authenticate": challenge}),
        )

    bound = Bound(build, kit)

    def start(request: Any) -> Any:
        verifier = bound.get()
        ctx = current()
        claims = verifier.verify(ctx.metadata.get("authorization"))
        return attach(ctx.derive(values={CLAIMS: types.MappingProxyType(claims)}))

    def finish(token: Any, response: Any, exc: BaseException | None) -> None:
        detach(token)

    def wrap(endpoint: Endpoint) -> Endpoint:
        return around(endpoint, start, finish)

    return wrap


def signer(
    key: Any,
    algorithm: str,
    claims: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    *,
    kid: str | None = None,
    lifetime: float | None = None,
) -> Middleware:
    """signer signs a token for every call and sends it, e.g. ``signer(key, "ES256", {...})``.

    *claims* is a mapping, or a callable giving one per call. With *lifetime* seconds, each
    token gets ``iat`` (now, unless the claims have one) and ``exp`` (``iat`` + *lifetime*).
    *kid*, given, goes in the token's header. Inside the call, client requests carry
    ``authorization: Bearer <token>`` (`kitobs.endpoint.context.OUTGOING_METADATA`).

    Raises:
        ConfigError: ``none``, an unknown algorithm, or a key unfit for *algorithm*.
    """
    (algorithm,) = _check_algorithms([algorithm], False)
    prepared = _prepare(key, algorithm, "jwt.signer(): the key")
    headers = {"kid": kid} if kid is not None else None
    if lifetime is not None and (not math.isfinite(lifetime) or lifetime <= 0):
        raise ConfigError("jwt.signer(): lifetime must be a positive number of seconds")

    def start(request: Any) -> Any:
        given = claims() if callable(claims) else claims
        payload = dict(given or {})
        if lifetime is not None:
            issued = payload.setdefault("iat", int(time.time()))
            payload["exp"] = issued + lifetime
        token = _pyjwt.encode(payload, prepared, algorithm=algorithm, headers=headers)
        ctx = current()
        outgoing = {**ctx.values.get(OUTGOING_METADATA, {}), "authorization": f"Bearer {token}"}
        return attach(ctx.derive(values={OUTGOING_METADATA: outgoing}))

    def finish(token: Any, response: Any, exc: BaseException | None) -> None:
        detach(token)

    def wrap(endpoint: Endpoint) -> Endpoint:
        return around(endpoint, start, finish)

    return wrap
