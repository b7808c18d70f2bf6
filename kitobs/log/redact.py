"""Redaction: hide the values of credential-like keys before a line is written.

A key is redacted when, compared case-insensitively with ``-`` and ``.`` read as ``_``, it equals
one of the names or ends with ``_`` followed by one of them. So with the default names
``access_token``, ``X-Api-Key`` and ``db.password`` are redacted, ``tokens`` is not.

Example::

    >>> is_redacted = matcher(DEFAULT_KEYS)
    >>> is_redacted("X-Api-Key"), is_redacted("user")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kitobs.config import DEFAULT_REDACT_KEYS
from kitobs.errors import ConfigError

__all__ = ["DEFAULT_KEYS", "MARKER", "matcher"]

#: DEFAULT_KEYS are the names redacted by default, e.g. ``password`` and ``api_key``.
DEFAULT_KEYS: tuple[str, ...] = DEFAULT_REDACT_KEYS
#: MARKER replaces a redacted value, e.g. ``password=[REDACTED]``.
MARKER = "[REDACTED]"

_SEPARATORS = str.maketrans("-.", "__")


def _norm(name: str) -> str:
    return name.lower().translate(_SEPARATORS)


def matcher(names: Iterable[str]) -> Callable[[str], bool]:
    """matcher builds a predicate that says whether a key is redacted, e.g. ``matcher(["pin"])``.

    An empty list of names gives a predicate that redacts nothing.

    Raises:
        ConfigError: a name is empty or not a string.
    """
    normed: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _norm(name).strip("_"):
            raise ConfigError(
                "redaction names must be non-empty strings",
                key="log.redact_keys",
                value=name,
                allowed="key names such as 'password'",
            )
        normed.add(_norm(name))
    tails = tuple("_" + n for n in sorted(normed))
    exact = frozenset(normed)

    def is_redacted(key: str) -> bool:
        k = _norm(key)
        return k in exact or k.endswith(tails)

    return is_redacted
