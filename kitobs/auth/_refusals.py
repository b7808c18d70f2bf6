"""What the auth middlewares share: the Kit they record with, bound once, and their refusals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from kitobs import contract
from kitobs.auth import Unauthenticated
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter

_B = TypeVar("_B")


class Bound(Generic[_B]):
    """Bound is what a middleware builds from a Kit: given one, now; else from the default Kit
    (`kitobs.kit.default`) at the first call, as ``@kitobs.instrument`` does, since the default
    may be set after the middleware is built."""

    __slots__ = ("_build", "_built", "_lock")

    def __init__(self, build: Callable[[Kit], _B], kit: Kit | None) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: _B | None = build(kit) if kit is not None else None

    def get(self) -> _B:
        built = self._built
        if built is not None:
            return built
        with self._lock:
            if self._built is None:
                from kitobs.kit import default

                self._built = self._build(default())
            return self._built


class Refusals:
    """Refusals counts one scheme's refused requests by reason and makes the error to raise.

    Every (scheme, reason) series is bound, at zero, when it is built, so that dashboards show
    them before the first refusal.
    """

    __slots__ = ("_children", "_debug", "_error_headers", "scheme")

    def __init__(
        self, kit: Kit, scheme: str, reasons: tuple[str, ...], headers: dict[str, str]
    ) -> None:
        family = kit.metrics.declare(contract.AUTH_FAILURES)
        self.scheme = scheme
        self._children: dict[str, Counter] = {}
        for reason in reasons:
            child = family.labels(scheme, reason)
            child.add(0)
            self._children[reason] = child
        self._debug = kit.logger.debug
        self._error_headers = headers

    def refuse(self, reason: str) -> Unauthenticated:
        """refuse counts a refusal and returns the one error every failure raises."""
        # Recording never raises into the request; the credential is never written.
        try:
            self._children[reason].add(1)
            self._debug("msg", "request refused", "scheme", self.scheme, "reason", reason)
        except Exception:
            pass
        return Unauthenticated(headers=self._error_headers)


def check_realm(realm: str, key: str | None) -> None:
    """check_realm refuses a realm that cannot be written inside a quoted header parameter."""
    if '"' in realm or "\\" in realm or any(ord(c) < 0x20 or ord(c) == 0x7F for c in realm):
        raise ConfigError(
            "the realm must not contain quotes, backslashes or control characters",
            key=key,
            value=realm,
        )
