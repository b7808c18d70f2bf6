"""Redaction for log lines: the rule of `kitobs.redact`, which span attributes share.

A key is redacted when, lowercased and without ``_``, ``-``, ``.`` and spaces, it ends with one of
the names (and is not one of the allowed keys). So with the default names ``accessToken``,
``X-Api-Key``, ``secret_key`` and ``db.password`` are redacted; ``max_tokens``, ``token_count`` and
``cache_key`` are not. Keys inside dict and list values are redacted by the same rule.

Example::

    >>> is_redacted = matcher(DEFAULT_KEYS)
    >>> is_redacted("X-Api-Key"), is_redacted("user")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

from kitobs.redact import DEFAULT_KEYS, MARKER, Rule

__all__ = ["DEFAULT_KEYS", "MARKER", "Rule", "matcher"]


def matcher(names: Iterable[str], allow: Iterable[str] = ()) -> Rule:
    """matcher builds the `Rule` for *names*, e.g. ``matcher(["pin"])``; a Rule is a predicate.

    An empty list of names gives a rule that redacts nothing.

    Raises:
        ConfigError: a name is empty or not a string.
    """
    return Rule(names, allow=allow)
