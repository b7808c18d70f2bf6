"""redact: the one rule that decides which keys hold secrets, for log lines and span attributes.

A key is *normalised* by lowercasing it and removing ``_``, ``-``, ``.`` and spaces, so
``accessToken``, ``ACCESS-TOKEN`` and ``access_token`` all read ``accesstoken``. A key is redacted
when its normal form **ends with** the normal form of one of the rule's names, unless its normal
form **equals** one of the rule's allowed names. With the default names `DEFAULT_KEYS`
``aws_secret_access_key`` (ends with ``accesskey``) and ``privateKey`` (``privatekey``) are
redacted; ``max_tokens`` (ends with ``tokens``, not ``token``), ``token_count`` and ``cache_key``
(no name ends them) are not.

The verdict for each key is computed once and kept (keys are few, values many), so deciding
costs a dict lookup. The same `Rule` hides the values of log keys, of keys inside dict and list
values (``{"db": {"password": ...}}``) and of span attributes before export.

Example::

    >>> rule = Rule()
    >>> rule("accessToken"), rule("max_tokens")
    (True, False)
    >>> rule.scrub({"db": {"host": "h", "password": "hunter2"}})
    {'db': {'host': 'h', 'password': '[REDACTED]'}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from kitobs.config import DEFAULT_REDACT_KEYS
from kitobs.errors import ConfigError

__all__ = ["DEFAULT_KEYS", "MARKER", "Rule", "normalise", "scrub"]

#: DEFAULT_KEYS are the names redacted by default (matched as endings of normalised keys).
DEFAULT_KEYS: tuple[str, ...] = DEFAULT_REDACT_KEYS
#: MARKER replaces a redacted value, e.g. ``password=[REDACTED]``.
MARKER = "[REDACTED]"

_DROP = str.maketrans("", "", "_-. ")
# Verdicts kept per rule: past this many distinct keys a verdict is computed each time.
_CACHE_MAX = 4096
_CONTAINERS = (dict, list, tuple)
# Containers nested deeper than this are replaced whole by the marker rather than walked.
_DEPTH_MAX = 64


def normalise(key: str) -> str:
    """normalise gives the form keys are matched in, e.g. ``"X-Api_Key"`` -> ``"xapikey"``."""
    return key.lower().translate(_DROP)


class _Verdicts(dict[object, bool]):
    """Key -> redacted?, filled on first sight; a hit is one C-level dict lookup.

    ``plain`` collects the keys found not secret, so ``mapping.keys() <= plain`` clears every key
    of a mapping in one C call.
    """

    __slots__ = ("_allow", "_ends", "plain")

    def __init__(self, ends: tuple[str, ...], allow: frozenset[str]) -> None:
        super().__init__()
        self._ends = ends
        self._allow = allow
        self.plain: set[str] = set()

    def __missing__(self, key: object) -> bool:
        if type(key) is not str:
            return False  # non-str keys (ints, tuples) never name a secret
        norm = normalise(key)
        verdict = bool(self._ends) and norm.endswith(self._ends) and norm not in self._allow
        if len(self) < _CACHE_MAX:
            self[key] = verdict
            if not verdict:
                self.plain.add(key)
        return verdict


class Rule:
    """Rule says whether a key is secret and hides secret values, e.g. ``Rule(extra=["pin"])``.

    Args:
        names: the names whose endings are redacted; replaces `DEFAULT_KEYS`. Empty: nothing
            is redacted.
        extra: names redacted in addition to *names*.
        allow: keys never redacted, compared whole after normalising, e.g. ``next_page_token``.
        marker: what replaces a redacted value.

    Raises:
        ConfigError: a name that is empty (after normalising) or not a string.
    """

    __slots__ = ("_verdicts", "is_redacted", "known_plain", "marker", "names")

    def __init__(
        self,
        names: Iterable[str] = DEFAULT_KEYS,
        *,
        extra: Iterable[str] = (),
        allow: Iterable[str] = (),
        marker: str = MARKER,
    ) -> None:
        ends = _normal_names((*names, *extra), "log.redact_keys")
        allowed = frozenset(_normal_names(allow, "log.redact_allow_keys"))
        self.names = ends
        self.marker = marker
        self._verdicts = _Verdicts(ends, allowed)
        #: is_redacted(key) -> bool, the cached verdict; the fastest way to ask.
        self.is_redacted: Callable[[object], bool] = self._verdicts.__getitem__
        #: known_plain holds keys already found not secret (a cache, filled as keys are seen):
        #: ``mapping.keys() <= rule.known_plain`` clears a whole mapping in one C call.
        self.known_plain: set[str] = self._verdicts.plain

    def __call__(self, key: str) -> bool:
        """Say whether *key*'s value is redacted, e.g. ``rule("db.password")`` is True."""
        return self._verdicts[key]

    def scrub(self, value: object) -> object:
        """Return *value* with the values of secret keys inside dicts and lists replaced.

        The value itself is returned when nothing in it is secret; otherwise a copy (plain dicts,
        lists and tuples) with each secret value replaced by the marker.
        """
        return scrub(value, self.is_redacted, self.marker, self.known_plain)

    def attributes(self, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return span *attributes* with secret values replaced; the same dict when none are."""
        if attributes.keys() <= self.known_plain:
            return attributes
        secret = list(filter(self.is_redacted, attributes))  # C all the way on cached verdicts
        if not secret:
            return attributes
        out = dict(attributes)
        for key in secret:
            out[key] = self.marker
        return out


def _normal_names(names: Iterable[str], key: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not normalise(name):
            raise ConfigError(
                "redaction names must be non-empty strings",
                key=key,
                value=name,
                allowed="key names such as 'password'",
            )
        norm = normalise(name)
        if norm not in out:
            out.append(norm)
    return tuple(out)


def scrub(
    value: object,
    is_redacted: Callable[[str], bool],
    marker: str,
    known_plain: AbstractSet[str] = frozenset(),
) -> object:
    """scrub returns *value* with secret keys' values inside dicts, lists and tuples replaced.

    For example ``scrub({"db": {"password": "x"}}, Rule(), "[REDACTED]")`` is
    ``{"db": {"password": "[REDACTED]"}}``. *value* itself is returned when nothing changes. A
    container that contains itself is cut where it repeats (``{...}``/``[...]``, as ``repr``
    writes it), and one nested deeper than 64 levels is replaced whole by the marker, so the
    result can always be encoded without reaching a secret.
    """
    if not isinstance(value, _CONTAINERS) or not _secret_inside(value, is_redacted, known_plain, 0):
        return value
    return _scrub(value, is_redacted, marker, set(), 0)


def _secret_inside(
    value: object, is_redacted: Callable[[str], bool], plain: AbstractSet[str], depth: int
) -> bool:
    # A walk that allocates nothing: most values hold no secret key. Too deep (or a cycle) counts
    # as secret, so the copying walk below cuts it.
    if depth >= _DEPTH_MAX:
        return True
    if isinstance(value, dict):
        if not value.keys() <= plain:
            for k in value:
                if k.__class__ is str and is_redacted(k):
                    return True
        items = value.values()
    else:
        items = value  # type: ignore[assignment]
    for v in items:
        if isinstance(v, _CONTAINERS) and _secret_inside(v, is_redacted, plain, depth + 1):
            return True
    return False


def _scrub(
    value: object, is_redacted: Callable[[str], bool], marker: str, path: set[int], depth: int
) -> object:
    if depth >= _DEPTH_MAX:
        return marker
    ident = id(value)
    if ident in path:
        return "{...}" if isinstance(value, dict) else "[...]"
    path.add(ident)
    changed = False
    new: object
    if isinstance(value, dict):
        items: list[tuple[object, object]] = []
        for k, v in value.items():
            if k.__class__ is str and is_redacted(k):
                new = marker
            elif isinstance(v, _CONTAINERS):
                new = _scrub(v, is_redacted, marker, path, depth + 1)
            else:
                new = v
            changed = changed or new is not v
            items.append((k, new))
        path.discard(ident)
        return dict(items) if changed else value
    out: list[object] = []
    for v in value:  # type: ignore[attr-defined]
        new = _scrub(v, is_redacted, marker, path, depth + 1) if isinstance(v, _CONTAINERS) else v
        changed = changed or new is not v
        out.append(new)
    path.discard(ident)
    if not changed:
        return value
    return tuple(out) if isinstance(value, tuple) else out
